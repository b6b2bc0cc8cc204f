"""Verify a devicebio assertion (WebAuthn §7.2) plus what generic libraries leave out:
the strict signature counter, the devicebio extension against the RP's policy, revocation."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import nacl.signing
from fido2.webauthn import CollectedClientData

from devicebio.protocol import (
    AuthenticationResponseData,
    LivenessClaim,
    Method,
    ProtocolError,
    ed25519_public_key_from_cose,
    parse_authentication_json,
)
from devicebio.protocol.encoding import quick_init

from . import _webauthn as checks
from .challenges import Challenge, Purpose
from .errors import Reason, VerifierError, from_protocol
from .policy import Assurance, Policy
from .revocation import check_not_revoked
from .store import CredentialRecord, Store

__all__ = ["VerifiedAssertion", "verify_assertion"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_transaction(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` inside ``store.atomic()`` when the store offers it: the challenge burn, the
    counter compare-and-set and the audit row then share one durable commit instead of three.
    The store commits on the way out whatever the outcome, so a refusal still burns the
    challenge (see ``SQLiteStore.atomic``)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        atomic = getattr(kwargs.get("store"), "atomic", None)
        with atomic() if callable(atomic) else contextlib.nullcontext():
            return fn(*args, **kwargs)

    return wrapper


@quick_init  # built on every verification: see quick_init
@dataclass(frozen=True)
class VerifiedAssertion:
    """A verified sign-in. ``new_sign_count`` is already stored (compare-and-set).

    ``assurance`` is what the RP's policy grants (never the device's own claim);
    ``Assurance.RECOVERY`` means: re-enrol this user now.
    """

    credential_id: bytes
    user: str
    new_sign_count: int
    method: Method
    assurance: Assurance
    liveness: LivenessClaim
    model: str | None
    user_verified: bool
    sdk_version: str | None = None

    @property
    def re_enrol_required(self) -> bool:
        return self.assurance is Assurance.RECOVERY


@_one_transaction
def verify_assertion(
    *,
    credential: Mapping[str, Any] | str | bytes,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    store: Store,
    policy: Policy = Policy(),  # noqa: B008 - frozen, immutable default
    revocation_issuer_key: nacl.signing.VerifyKey | None = None,
    now: float | None = None,
) -> VerifiedAssertion:
    """Verify an AuthenticationResponseJSON from a devicebio device.

    ``expected_challenge`` must have been issued with :func:`verifier.issue_challenge` for
    ``Purpose.AUTHENTICATE`` and the credential's user; it is consumed here, whatever the
    outcome. With ``revocation_issuer_key`` the list in force must exist, verify, be fresh,
    and name neither the credential, its device, its model nor its SDK version.

    Order: challenge consumed -> parse -> credential lookup -> clientData (type, origin,
    challenge) -> rpIdHash -> flags -> extension -> signature over the exact received bytes
    -> policy (with ``require_liveness``, a face verification's liveness claim must carry the
    sequence hash recomputed from ``expected_challenge``: else ``LIVENESS_MISMATCH``) ->
    revocation -> counter (compare-and-set, the only write besides the challenge and the
    audit trail).
    """
    # Caller mistakes are reported before the challenge is touched.
    checks.check_expectations(expected_origin, expected_rp_id)
    if not isinstance(policy, Policy):
        raise VerifierError(Reason.MALFORMED, "policy must be a Policy")
    checks.check_revocation_key(revocation_issuer_key)
    credential_id_hex: str | None = None
    try:
        challenge, parsed, record = redeem_and_parse(
            store, credential, expected_challenge, Purpose.AUTHENTICATE, now
        )
        credential_id_hex = parsed.credential_id.hex()
        result = _verify(
            parsed,
            record,
            challenge=challenge,
            expected_challenge=expected_challenge,
            expected_origin=expected_origin,
            expected_rp_id=expected_rp_id,
            store=store,
            policy=policy,
            revocation_issuer_key=revocation_issuer_key,
            now=now,
        )
    except VerifierError as exc:
        checks.audit_refusal(store, "assertion_refused", exc, credential_id=credential_id_hex)
        raise
    store.audit(
        "assertion_verified",
        credential_id=credential_id_hex,
        user=result.user,
        sign_count=result.new_sign_count,
        method=result.method.value,
        assurance=result.assurance.value,
    )
    return result


def redeem_and_parse(
    store: Store,
    credential: Mapping[str, Any] | str | bytes,
    expected_challenge: bytes,
    purpose: Purpose,
    now: float | None,
) -> tuple[Challenge, AuthenticationResponseData, CredentialRecord | None]:
    """Burn the challenge, parse the response, and read the credential it names.

    Any attempt, whatever it fails on, uses the challenge up, and a bad challenge is refused
    before a bad response, as if the challenge were burnt first. The parse runs first (it
    touches nothing) so that a good response's challenge burn and credential read can share
    one store statement. The challenge's user is compared by the caller, once the credential
    (and so its owner) is known.
    """
    try:
        parsed = parse_authentication_json(credential)
    except ProtocolError as exc:
        checks.redeem_challenge(
            store, expected=expected_challenge, purpose=purpose, user=None, now=now
        )
        raise from_protocol(exc) from None
    challenge, record = checks.redeem_challenge_for(
        store,
        expected=expected_challenge,
        credential_id=parsed.credential_id,
        purpose=purpose,
        now=now,
    )
    return challenge, parsed, record


def _verify(
    parsed: AuthenticationResponseData,
    record: CredentialRecord | None,
    *,
    expected_type: str = CollectedClientData.TYPE.GET.value,
    check_client: Callable[[CollectedClientData], None] | None = None,
    challenge: Challenge,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    store: Store,
    policy: Policy,
    revocation_issuer_key: nacl.signing.VerifyKey | None,
    now: float | None,
) -> VerifiedAssertion:
    checks.check_type(parsed.type)
    # §7.2 steps 5-7: the credential (read with the challenge burn), and its user.
    if record is None:
        raise VerifierError(Reason.CREDENTIAL_UNKNOWN, "no credential with this id")
    checks.check_challenge_user(challenge, record.user)
    if (
        parsed.user_handle is not None
        and record.user_handle
        and not hmac.compare_digest(parsed.user_handle, record.user_handle)
    ):
        raise VerifierError(Reason.CREDENTIAL_UNKNOWN, "userHandle does not own this credential")

    client_data: CollectedClientData = parsed.client_data
    checks.check_client_data(  # 11, 13
        client_data,
        expected_type=expected_type,
        expected_origin=expected_origin,
    )
    if check_client is not None:
        # What a ceremony adds to clientDataJSON (a payment's transaction) is compared here,
        # before the challenge: "not what you asked the user to approve" is the refusal.
        check_client(client_data)
    checks.check_challenge(client_data, expected_challenge)  # 12
    auth_data = parsed.authenticator_data
    checks.check_rp_id(auth_data, expected_rp_id)  # 15
    if record.rp_id != expected_rp_id:
        raise VerifierError(Reason.RP_ID_MISMATCH, "credential was registered for another RP")
    flags = int(auth_data.flags)
    if flags & checks.AT:
        raise VerifierError(Reason.MALFORMED, "assertions carry no attested credential data")
    checks.check_flags(auth_data, require_uv=policy.require_user_verification)  # 16-19
    extension = checks.devicebio_extension(auth_data, parsed.extension)  # 20
    if extension.device_id is not None:
        raise VerifierError(Reason.EXTENSION_INVALID, "device id belongs to registration only")

    # 21-22: the signature covers the received authenticatorData bytes and the hash of the
    # received clientDataJSON bytes, never a re-encoding.
    _verify_signature(record, auth_data + hashlib.sha256(client_data).digest(), parsed.signature)

    assurance = policy.check(extension, challenge=expected_challenge)
    user_verified = bool(flags & checks.UV)
    if not user_verified:
        assurance = Assurance.NONE

    if revocation_issuer_key is not None:
        check_not_revoked(
            store,
            revocation_issuer_key,
            credential_id=record.credential_id,
            device_id=record.device_id,
            model_id=extension.model,
            sdk_version=extension.sdk_version,
            now=now,
            required=True,
        )

    # 23: strictly increasing counter, unless the authenticator has none (both zero).
    new = auth_data.counter
    old = record.sign_count
    if not (new > old or new == old == 0):
        raise VerifierError(
            Reason.COUNTER_REGRESSION,
            f"signature counter {new} is not above {old}: possible cloned credential",
        )
    if new != old and not store.update_sign_count(record.credential_id, old, new):
        raise VerifierError(
            Reason.COUNTER_REGRESSION, "counter changed concurrently: another assertion won"
        )
    return VerifiedAssertion(
        credential_id=record.credential_id,
        user=record.user,
        new_sign_count=new,
        method=extension.method,
        assurance=assurance,
        liveness=extension.liveness,
        model=extension.model,
        user_verified=user_verified,
        sdk_version=extension.sdk_version,
    )


@functools.lru_cache(maxsize=1024)
def _verify_key(cose_key: bytes) -> nacl.signing.VerifyKey:
    # A VerifyKey is immutable and depends on the stored COSE_Key's exact bytes alone, so
    # one per key is kept: the strict decode and the key load run once per credential key.
    # Failures are not cached.
    return nacl.signing.VerifyKey(ed25519_public_key_from_cose(cose_key))


def _verify_signature(record: CredentialRecord, message: bytes, signature: bytes) -> None:
    try:
        key = _verify_key(record.public_key)
    except Exception:
        # Registration only ever stores EdDSA keys: anything else is a damaged store.
        raise VerifierError(Reason.STORAGE, "stored credential key is not Ed25519") from None
    checks.verify_signature(key, message, signature, Reason.BAD_SIGNATURE)
