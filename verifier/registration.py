"""Verify a devicebio registration (WebAuthn §7.1) and store the new credential."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing
from fido2 import cbor
from fido2.webauthn import CollectedClientData

from devicebio.protocol import (
    COSE_ALG_EDDSA,
    DevicebioExtension,
    LivenessClaim,
    Method,
    ed25519_public_key_from_cose,
    parse_registration_json,
)

from . import _webauthn as checks
from .challenges import Purpose
from .errors import Reason, VerifierError, protocol_errors
from .policy import Assurance, Policy
from .revocation import check_not_revoked
from .store import CredentialRecord, Store

__all__ = ["VerifiedRegistration", "verify_registration"]


@dataclass(frozen=True)
class VerifiedRegistration:
    """What was stored (``record``) and how the user was verified while registering."""

    record: CredentialRecord
    aaguid: bytes
    method: Method
    liveness: LivenessClaim
    model: str | None
    assurance: Assurance
    user_verified: bool

    @property
    def credential_id(self) -> bytes:
        return self.record.credential_id

    @property
    def user(self) -> str:
        return self.record.user

    @property
    def device_id(self) -> bytes | None:
        return self.record.device_id


def verify_registration(
    *,
    credential: Mapping[str, Any] | str | bytes,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    store: Store,
    user: str,
    policy: Policy = Policy(),  # noqa: B008 - frozen, immutable default
    user_handle: bytes | None = None,
    revocation_issuer_key: nacl.signing.VerifyKey | None = None,
    first_credential_only: bool = False,
    now: float | None = None,
) -> VerifiedRegistration:
    """Verify a RegistrationResponseJSON made by a devicebio device and store the credential.

    ``expected_challenge`` must have been issued with :func:`verifier.issue_challenge` for
    ``user`` and ``Purpose.REGISTER``; it is consumed here, whatever the outcome.
    ``user_handle`` is the ``user.id`` the RP put in its creation options (the response does
    not repeat it); when given, later assertions must carry the same userHandle.

    Accepted: attestation format ``packed`` self-attestation only, alg EdDSA (-8) only,
    device-bound credentials only (BE = BS = 0), and the devicebio extension with a per-RP
    device id. With ``revocation_issuer_key`` the list in force must exist, verify, be fresh,
    and name neither the credential, the device, its model nor its SDK version: a revoked
    device cannot come back under a new credential. ``first_credential_only`` (implied by a
    ``Purpose.SIGN_UP`` challenge) is for self-service sign-up, where anyone may ask for a
    register challenge: the credential is then stored only if ``user`` has none, checked
    atomically with the insert
    (``USER_ALREADY_REGISTERED``), so a challenge obtained before the real user signed up
    cannot add the asker's device to her account afterwards. Raises
    :class:`~verifier.errors.VerifierError` with a reason on any failure.
    """
    # Caller mistakes are reported before the challenge is touched.
    checks.check_expectations(expected_origin, expected_rp_id)
    if not isinstance(user, str) or not user:
        raise VerifierError(Reason.MALFORMED, "user must be a non-empty str")
    if not isinstance(policy, Policy):
        raise VerifierError(Reason.MALFORMED, "policy must be a Policy")
    checks.check_revocation_key(revocation_issuer_key)
    if user_handle is not None and (
        not isinstance(user_handle, bytes) or not 1 <= len(user_handle) <= 64
    ):
        raise VerifierError(Reason.MALFORMED, "user_handle must be 1..64 bytes")
    if type(first_credential_only) is not bool:
        raise VerifierError(Reason.MALFORMED, "first_credential_only must be a bool")
    credential_id_hex: str | None = None
    try:
        # Burn the challenge first: any attempt, whatever it fails on, uses it up.
        challenge = checks.redeem_challenge(
            store, expected=expected_challenge, purpose=Purpose.REGISTER, user=user, now=now
        )
        with protocol_errors():
            parsed = parse_registration_json(credential)
        credential_id_hex = parsed.credential_id.hex()
        result = _verify(
            parsed_type=parsed.type,
            client_data=parsed.client_data,
            attestation=parsed.attestation,
            credential_id=parsed.credential_id,
            extension=parsed.extension,
            expected_challenge=expected_challenge,
            expected_origin=expected_origin,
            expected_rp_id=expected_rp_id,
            store=store,
            user=user,
            policy=policy,
            user_handle=user_handle,
            revocation_issuer_key=revocation_issuer_key,
            first_credential_only=first_credential_only or challenge.purpose is Purpose.SIGN_UP,
            now=now,
        )
    except VerifierError as exc:
        checks.audit_refusal(
            store,
            "registration_refused",
            exc,
            credential_id=credential_id_hex,
            user=user if isinstance(user, str) else None,
        )
        raise
    store.audit(
        "credential_registered",
        credential_id=result.credential_id.hex(),
        user=result.user,
        method=result.method.value,
        assurance=result.assurance.value,
    )
    return result


def _verify(
    *,
    parsed_type: str,
    client_data: CollectedClientData,
    attestation: Any,
    credential_id: bytes,
    extension: DevicebioExtension | None,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    store: Store,
    user: str,
    policy: Policy,
    user_handle: bytes | None,
    revocation_issuer_key: nacl.signing.VerifyKey | None,
    first_credential_only: bool,
    now: float | None,
) -> VerifiedRegistration:
    # §7.1 steps in order; the step numbers are those of WebAuthn Level 3.
    checks.check_type(parsed_type)  # 4 (type of the PublicKeyCredential)
    checks.check_client_data(  # 7, 9
        client_data,
        expected_type=CollectedClientData.TYPE.CREATE.value,
        expected_origin=expected_origin,
    )
    checks.check_challenge(client_data, expected_challenge)  # 8
    auth_data = attestation.auth_data
    checks.check_rp_id(auth_data, expected_rp_id)  # 13
    checks.check_flags(auth_data, require_uv=policy.require_user_verification)  # 14-17
    cred_data = auth_data.credential_data
    assert cred_data is not None  # the wire parser refuses an attestation without it

    # 18: only EdDSA keys, and only the exact OKP/Ed25519 shape.
    if cred_data.public_key.get(3) != COSE_ALG_EDDSA:
        raise VerifierError(Reason.UNSUPPORTED_ALGORITHM, "only EdDSA (-8) credentials")
    with protocol_errors():
        raw_key = ed25519_public_key_from_cose(cred_data.public_key)

    # 19: the extension this verifier asked for, and nothing unsolicited.
    extension = checks.devicebio_extension(auth_data, extension)
    if extension.device_id is None:
        raise VerifierError(Reason.EXTENSION_INVALID, "registration lacks the device id")

    # 20-22: packed self-attestation, signed by the credential key itself.
    if attestation.fmt != "packed":
        raise VerifierError(Reason.UNSUPPORTED_FORMAT, "only 'packed' attestation is accepted")
    stmt = attestation.att_stmt
    if "x5c" in stmt or "ecdaaKeyId" in stmt:
        raise VerifierError(Reason.UNSUPPORTED_FORMAT, "only self-attestation is accepted")
    if set(stmt) != {"alg", "sig"} or not isinstance(stmt["sig"], bytes):
        raise VerifierError(Reason.BAD_ATTESTATION, "packed attStmt must be {alg, sig}")
    if stmt["alg"] != COSE_ALG_EDDSA or type(stmt["alg"]) is not int:
        raise VerifierError(Reason.BAD_ATTESTATION, "attStmt alg differs from the key's")
    checks.verify_ed25519(
        raw_key, bytes(auth_data) + client_data.hash, stmt["sig"], Reason.BAD_ATTESTATION
    )

    # The RP's policy judges only authentic claims, so it runs after the signature.
    assurance = policy.check(extension, challenge=expected_challenge)
    if not auth_data.flags & auth_data.FLAG.UV:
        assurance = Assurance.NONE
    if revocation_issuer_key is not None:
        check_not_revoked(
            store,
            revocation_issuer_key,
            credential_id=credential_id,
            device_id=extension.device_id,
            model_id=extension.model,
            sdk_version=extension.sdk_version,
            now=now,
            required=True,
        )

    # 24-26: credential id not registered before; then store.
    if store.get_credential(credential_id) is not None:
        raise VerifierError(Reason.CREDENTIAL_EXISTS, "this credential id is registered")
    record = CredentialRecord(
        credential_id=credential_id,
        user=user,
        user_handle=user_handle or b"",
        rp_id=expected_rp_id,
        public_key=cbor.encode(cred_data.public_key),
        sign_count=auth_data.counter,
        device_id=extension.device_id,
        created_at=time.time() if now is None else float(now),
    )
    # CREDENTIAL_EXISTS again if a racing registration won; USER_ALREADY_REGISTERED if the
    # user got a credential since the challenge was issued (checked in the same step).
    store.add_credential(record, first_for_user=first_credential_only)
    return VerifiedRegistration(
        record=record,
        aaguid=bytes(cred_data.aaguid),
        method=extension.method,
        liveness=extension.liveness,
        model=extension.model,
        assurance=assurance,
        user_verified=bool(auth_data.flags & auth_data.FLAG.UV),
    )
