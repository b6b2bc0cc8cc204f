"""Checks shared by registration and assertion verification (internal).

Each helper is one step of WebAuthn §7.1 / §7.2 and raises only that step's
:class:`~verifier.errors.VerifierError` reasons, so the public functions read as the steps.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac

import nacl.exceptions
import nacl.signing
from fido2.webauthn import AuthenticatorData, CollectedClientData

from devicebio.protocol import (
    EXTENSION_ID,
    DevicebioExtension,
)

from .challenges import Challenge, Purpose, consume_challenge, consume_challenge_for
from .errors import Reason, VerifierError
from .store import CredentialRecord, Store

_F = AuthenticatorData.FLAG
# The flag bits as plain ints: IntFlag arithmetic costs a microsecond or two per operation
# (enum machinery), and a verification tests the flags a dozen times.
UP, UV, BE, BS, AT, ED = (int(f) for f in (_F.UP, _F.UV, _F.BE, _F.BS, _F.AT, _F.ED))


def check_expectations(expected_origin: object, expected_rp_id: object) -> None:
    """Caller mistakes, reported as such (and before the challenge is touched)."""
    if not isinstance(expected_origin, str) or not expected_origin:
        raise VerifierError(Reason.MALFORMED, "expected_origin must be a non-empty str")
    if not isinstance(expected_rp_id, str) or not expected_rp_id:
        raise VerifierError(Reason.MALFORMED, "expected_rp_id must be a non-empty str")
    try:
        expected_rp_id.encode()
        expected_origin.encode()
    except UnicodeEncodeError:
        raise VerifierError(Reason.MALFORMED, "expected origin / RP id is not valid text") from None


def check_revocation_key(key: object) -> None:
    if key is not None and not isinstance(key, nacl.signing.VerifyKey):
        raise VerifierError(Reason.MALFORMED, "revocation_issuer_key must be a VerifyKey")


def check_type(value: str) -> None:
    if value != "public-key":
        raise VerifierError(Reason.WRONG_TYPE, "credential type must be 'public-key'")


def check_client_data(
    client_data: CollectedClientData, *, expected_type: str, expected_origin: str
) -> None:
    if client_data.type != expected_type:
        raise VerifierError(Reason.WRONG_TYPE, f"clientDataJSON.type must be {expected_type}")
    if client_data.origin != expected_origin:
        raise VerifierError(Reason.ORIGIN_MISMATCH, "origin is not the expected origin")
    if client_data.cross_origin:
        # devicebio never runs inside a third-party iframe; refusing keeps clickjacking out.
        raise VerifierError(Reason.ORIGIN_MISMATCH, "cross-origin ceremonies are refused")


def redeem_challenge(
    store: Store,
    *,
    expected: bytes,
    purpose: Purpose,
    user: str | None,
    now: float | None,
) -> Challenge:
    """Burn ``expected`` (single use, TTL, purpose bound, and user bound when given).

    Called before any other check of the response, so that every attempt, even a malformed
    or mis-addressed one, uses the session's challenge up: it never serves twice.
    """
    return consume_challenge(store, _expected_bytes(expected), purpose=purpose, user=user, now=now)


def redeem_challenge_for(
    store: Store, *, expected: bytes, credential_id: bytes, purpose: Purpose, now: float | None
) -> tuple[Challenge, CredentialRecord | None]:
    """:func:`redeem_challenge` (no user: it is the credential's, compared by the caller) that
    also reads the credential ``credential_id`` in the same store step."""
    return consume_challenge_for(
        store, _expected_bytes(expected), credential_id, purpose=purpose, now=now
    )


def _expected_bytes(expected: object) -> bytes:
    if not isinstance(expected, bytes | bytearray | memoryview):
        raise VerifierError(Reason.MALFORMED, "expected_challenge must be bytes")
    return bytes(expected)


def check_challenge_user(challenge: Challenge, user: str) -> None:
    if not hmac.compare_digest(challenge.user.encode(), user.encode()):
        raise VerifierError(Reason.CHALLENGE_WRONG_USER, "challenge was issued to another user")


def check_challenge(client_data: CollectedClientData, expected: bytes) -> None:
    if not hmac.compare_digest(client_data.challenge, bytes(expected)):
        raise VerifierError(Reason.CHALLENGE_MISMATCH, "clientDataJSON carries another challenge")


@functools.lru_cache(maxsize=64)
def _rp_id_hash(rp_id: str) -> bytes:
    return hashlib.sha256(rp_id.encode()).digest()


def check_rp_id(auth_data: AuthenticatorData, expected_rp_id: str) -> None:
    expected = _rp_id_hash(expected_rp_id)
    if not hmac.compare_digest(auth_data.rp_id_hash, expected):
        raise VerifierError(Reason.RP_ID_MISMATCH, "rpIdHash is not the expected RP id's")


def check_flags(auth_data: AuthenticatorData, *, require_uv: bool) -> None:
    flags = int(auth_data.flags)
    if not flags & UP:
        raise VerifierError(Reason.USER_NOT_PRESENT, "UP flag not set")
    if require_uv and not flags & UV:
        raise VerifierError(Reason.USER_NOT_VERIFIED, "UV flag not set")
    if flags & BS and not flags & BE:
        raise VerifierError(Reason.BACKUP_FLAGS_INCONSISTENT, "BS set without BE")
    if flags & BE:
        # devicebio keys never leave the vault: a backup-eligible credential is not ours,
        # and a credential registered device-bound must stay device-bound (§6.1.3).
        raise VerifierError(
            Reason.BACKUP_FLAGS_INCONSISTENT, "only device-bound credentials are accepted"
        )


def devicebio_extension(
    auth_data: AuthenticatorData, decoded: DevicebioExtension | None
) -> DevicebioExtension:
    """The signed devicebio extension (``decoded`` by the parser from ``auth_data``);
    unsolicited extensions are refused (§7.2 step 20)."""
    if not int(auth_data.flags) & ED or not auth_data.extensions:
        raise VerifierError(Reason.EXTENSION_MISSING, "no devicebio extension")
    if EXTENSION_ID not in auth_data.extensions:
        raise VerifierError(Reason.EXTENSION_MISSING, "no devicebio extension")
    if set(auth_data.extensions) != {EXTENSION_ID}:
        raise VerifierError(Reason.EXTENSION_INVALID, "unsolicited authenticator extensions")
    assert decoded is not None  # the parser decodes a present extension or refuses it
    return decoded


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes, reason: Reason) -> None:
    """libsodium's verify: strict about small-order keys and non-canonical signatures."""
    try:
        key = nacl.signing.VerifyKey(public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise VerifierError(reason, "signature does not verify") from None
    verify_signature(key, message, signature, reason)


def verify_signature(
    key: nacl.signing.VerifyKey, message: bytes, signature: bytes, reason: Reason
) -> None:
    """:func:`verify_ed25519` with the key already loaded."""
    try:
        key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        raise VerifierError(reason, "signature does not verify") from None


def audit_refusal(store: Store, event: str, exc: VerifierError, **fields: str | None) -> None:
    """Best effort: a storage fault while recording a refusal must not mask the refusal."""
    with contextlib.suppress(VerifierError):
        store.audit(event, reason=exc.reason.value, **fields)
