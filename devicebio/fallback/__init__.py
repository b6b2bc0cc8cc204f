"""What verifies the user when the face does not: a PIN, one-time recovery codes, a FIDO2
security key, and the face attempt limits that decide when a fallback is required.

- :mod:`~devicebio.fallback.knowledge`: :class:`Pin` (with its retry counter) and
  :class:`RecoveryCodes`.
- :mod:`~devicebio.fallback.security_key`: :class:`SecurityKeyFallback` (python-fido2).
- :mod:`~devicebio.fallback.attempts`: :class:`AttemptLimiter` (NIST SP 800-63B §5.2.2).

Apps call these through :class:`devicebio.Authenticator` (``authenticate_with_pin`` and its
siblings), which also clears the face lockout and signs the assertion.
"""

from __future__ import annotations

import enum
from typing import Any

from devicebio.fallback.attempts import AttemptLimiter, AttemptPolicy, AttemptStatus
from devicebio.fallback.knowledge import Pin, PinStatus, RecoveryCodes

__all__ = [
    "AttemptLimiter",
    "AttemptPolicy",
    "AttemptStatus",
    "Fallback",
    "KeyInfo",
    "Pin",
    "PinStatus",
    "RecoveryCodes",
    "SecurityKeyFallback",
]


class Fallback(enum.StrEnum):
    """A way to verify the user other than the face (what ``AuthResult.fallbacks`` offers).

    The values are the CLI's ``--method`` names and the ``devicebio`` extension's method
    names for the same verification.
    """

    PIN = "pin"
    RECOVERY = "recovery"
    SECURITY_KEY = "security-key"


def __getattr__(name: str) -> Any:
    # python-fido2's HID transport loads only when a security key is used
    if name in ("SecurityKeyFallback", "KeyInfo"):
        from devicebio.fallback import security_key

        return getattr(security_key, name)
    raise AttributeError(f"module 'devicebio.fallback' has no attribute {name!r}")
