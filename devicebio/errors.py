"""The one error type the device SDK raises, with a machine-readable reason.

Expected negative outcomes of a face attempt (no match, too dark, ...) are *not* errors:
they are values of :class:`devicebio.outcome.Outcome`. Errors are faults: corrupt or
tampered state, hostile input, a missing model, a locked vault.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

from devicebio.protocol.errors import ProtocolError, ProtocolReason


class Reason(enum.StrEnum):
    # vault / stored state
    VAULT_NOT_FOUND = "vault_not_found"
    VAULT_EXISTS = "vault_exists"
    WRONG_KEY = "wrong_key"
    RECORD_NOT_FOUND = "record_not_found"
    RECORD_CORRUPT = "record_corrupt"
    RECORD_TAMPERED = "record_tampered"
    RECORD_SWAPPED = "record_swapped"
    RECORD_MISSING = "record_missing"  # the vault lists it, the file is gone
    RECORD_ROLLED_BACK = "record_rolled_back"  # an older copy was put back
    SCHEMA_UNSUPPORTED = "schema_unsupported"
    INSECURE_PERMISSIONS = "insecure_permissions"
    KEY_PROVIDER_UNAVAILABLE = "key_provider_unavailable"
    # knowledge factors and attempt limits
    PIN_NOT_SET = "pin_not_set"
    PIN_POLICY = "pin_policy"
    PIN_WRONG = "pin_wrong"
    RECOVERY_CODE_WRONG = "recovery_code_wrong"
    LOCKED_OUT = "locked_out"
    # security keys
    SECURITY_KEY_NOT_ENROLLED = "security_key_not_enrolled"
    SECURITY_KEY_REJECTED = "security_key_rejected"
    SECURITY_KEY_NOT_TOUCHED = "security_key_not_touched"
    SECURITY_KEY_UNAVAILABLE = "security_key_unavailable"
    # enrolment
    NOT_ENROLLED = "not_enrolled"
    # credentials / protocol
    CREDENTIAL_NOT_FOUND = "credential_not_found"
    USER_NOT_VERIFIED = "user_not_verified"
    USER_DECLINED = "user_declined"  # the user did not confirm what they were shown
    INVALID_ARGUMENT = "invalid_argument"
    MALFORMED_DATA = "malformed_data"
    # vision
    BAD_IMAGE = "bad_image"
    MODEL_MISSING = "model_missing"
    MODEL_HASH_MISMATCH = "model_hash_mismatch"
    MODEL_BUILD_FAILED = "model_build_failed"
    FRAME_SOURCE = "frame_source"
    DEPENDENCY_MISSING = "dependency_missing"


class DeviceBioError(Exception):
    """Base (and only) exception type of the ``devicebio`` package.

    ``reason`` is stable and machine-readable; the message is for humans and never contains
    biometric data (images, templates, embeddings, scores).
    """

    def __init__(self, reason: Reason, message: str = "", *, hint: str | None = None) -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(f"{reason.value}: {message}" if message else reason.value)


_FROM_PROTOCOL = {
    ProtocolReason.MALFORMED_DATA: Reason.MALFORMED_DATA,
    ProtocolReason.INVALID_ARGUMENT: Reason.INVALID_ARGUMENT,
    ProtocolReason.EXTENSION_INVALID: Reason.MALFORMED_DATA,
}


@contextlib.contextmanager
def protocol_errors() -> Iterator[None]:
    """The device SDK's one boundary with the shared protocol (usable as a decorator too):
    the protocol's typed error becomes ours, so app developers catch one base error."""
    try:
        yield
    except ProtocolError as exc:
        raise DeviceBioError(_FROM_PROTOCOL[exc.reason], exc.detail) from None
