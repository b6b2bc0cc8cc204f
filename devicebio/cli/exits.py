"""The exit-code contract every ``devicebio`` command keeps (also printed by ``--help``).

  0  success
  1  refused: wrong PIN or recovery code, locked out, no match, user not verified
  2  usage: bad arguments or input
  3  stored state: no vault, wrong passphrase, corrupt or tampered record
  4  environment: a model, camera or optional dependency is missing

A :class:`~devicebio.errors.DeviceBioError` maps to a code by its reason alone, so scripts can
branch on the code without parsing messages.
"""

from __future__ import annotations

from devicebio.errors import Reason

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_STATE, EXIT_ENV = 0, 1, 2, 3, 4


_REFUSED = {
    Reason.SECURITY_KEY_REJECTED,
    Reason.SECURITY_KEY_NOT_TOUCHED,
    Reason.SECURITY_KEY_NOT_ENROLLED,
    Reason.PIN_WRONG,
    Reason.RECOVERY_CODE_WRONG,
    Reason.LOCKED_OUT,
    Reason.USER_NOT_VERIFIED,
    Reason.USER_DECLINED,
}


_USAGE = {Reason.INVALID_ARGUMENT, Reason.PIN_POLICY, Reason.MALFORMED_DATA, Reason.BAD_IMAGE}


_ENV = {
    Reason.MODEL_MISSING,
    Reason.MODEL_HASH_MISMATCH,
    Reason.MODEL_BUILD_FAILED,
    Reason.FRAME_SOURCE,
    Reason.DEPENDENCY_MISSING,
    Reason.KEY_PROVIDER_UNAVAILABLE,
    Reason.SECURITY_KEY_UNAVAILABLE,
}


EPILOG = """exit codes:
  0  success
  1  refused (wrong PIN or recovery code, locked out, no match, not verified)
  2  usage (bad arguments or input)
  3  stored state (no vault, wrong passphrase, corrupt or tampered record)
  4  environment (model, camera or optional dependency missing)

secrets: the vault passphrase comes from DEVICEBIO_PASSPHRASE or a prompt; a PIN or
recovery code from standard input (one line) or a prompt. Never from arguments."""


def exit_code_for(reason: Reason) -> int:
    if reason in _REFUSED:
        return EXIT_REFUSED
    if reason in _USAGE:
        return EXIT_USAGE
    if reason in _ENV:
        return EXIT_ENV
    return EXIT_STATE
