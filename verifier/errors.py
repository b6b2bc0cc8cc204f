"""The one error type the verifier raises. Every refusal carries a machine-readable reason."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

from devicebio.protocol import ProtocolError, ProtocolReason


class Reason(enum.StrEnum):
    MALFORMED = "malformed"
    UNSUPPORTED_FORMAT = "unsupported_format"
    WRONG_TYPE = "wrong_type"
    CHALLENGE_UNKNOWN = "challenge_unknown"
    CHALLENGE_MISMATCH = "challenge_mismatch"
    CHALLENGE_REUSED = "challenge_reused"
    CHALLENGE_EXPIRED = "challenge_expired"
    CHALLENGE_WRONG_PURPOSE = "challenge_wrong_purpose"
    CHALLENGE_WRONG_USER = "challenge_wrong_user"
    ORIGIN_MISMATCH = "origin_mismatch"
    RP_ID_MISMATCH = "rp_id_mismatch"
    USER_NOT_PRESENT = "user_not_present"
    USER_NOT_VERIFIED = "user_not_verified"
    BACKUP_FLAGS_INCONSISTENT = "backup_flags_inconsistent"
    BAD_SIGNATURE = "bad_signature"
    BAD_ATTESTATION = "bad_attestation"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    CREDENTIAL_UNKNOWN = "credential_unknown"
    CREDENTIAL_EXISTS = "credential_exists"
    USER_ALREADY_REGISTERED = "user_already_registered"
    COUNTER_REGRESSION = "counter_regression"
    EXTENSION_MISSING = "extension_missing"
    EXTENSION_INVALID = "extension_invalid"
    POLICY_METHOD_REFUSED = "policy_method_refused"
    POLICY_LIVENESS_REQUIRED = "policy_liveness_required"
    LIVENESS_MISMATCH = "liveness_mismatch"
    LIVENESS_IMPLAUSIBLE = "liveness_implausible"
    PAYMENT_MISMATCH = "payment_mismatch"  # the signed payment is not the one asked for
    AMOUNT_ABOVE_METHOD_LIMIT = "amount_above_method_limit"  # step up to a stronger method
    DAILY_LIMIT = "daily_limit"  # the user's rolling 24-hour total would pass the limit
    REVOKED = "revoked"
    REVOCATION_LIST_STALE = "revocation_list_stale"
    REVOCATION_LIST_ROLLBACK = "revocation_list_rollback"
    REVOCATION_LIST_MISSING = "revocation_list_missing"
    REVOCATION_LIST_BAD_SIGNATURE = "revocation_list_bad_signature"
    STORAGE = "storage"


class VerifierError(Exception):
    """Base (and only) exception type of the ``verifier`` package; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {message}" if message else reason.value)


_FROM_PROTOCOL = {
    ProtocolReason.MALFORMED_DATA: Reason.MALFORMED,
    ProtocolReason.INVALID_ARGUMENT: Reason.MALFORMED,
    ProtocolReason.EXTENSION_INVALID: Reason.EXTENSION_INVALID,
}


def from_protocol(exc: ProtocolError) -> VerifierError:
    """The verifier's one boundary with the shared protocol: its typed error becomes ours
    (hot paths catch ``ProtocolError`` and raise this, sparing a context manager per call)."""
    return VerifierError(_FROM_PROTOCOL[exc.reason], exc.detail)


@contextlib.contextmanager
def protocol_errors() -> Iterator[None]:
    """:func:`from_protocol` around a block."""
    try:
        yield
    except ProtocolError as exc:
        raise from_protocol(exc) from None
