"""devicebio: on-device face authentication that speaks WebAuthn.

The public API is what this module exports. Importing it is cheap and pulls in no
numpy/OpenCV/onnxruntime: the vision stack loads on first use (``devicebio[device]``).
Primitives that are easy to misuse live in :mod:`devicebio.hazmat`.
"""

from __future__ import annotations

from typing import Any

from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import AttemptLimiter, AttemptPolicy, Pin, RecoveryCodes
from devicebio.store.vault import KeyringKey, PassphraseKey, RawKey, Vault

__version__ = "0.1.0"

# name -> module: loaded on first attribute access (PEP 562), so the verifier, which shares the
# wire module, never imports the vision stack.
_LAZY = {
    "Credentials": "devicebio.hazmat.credentials",
    "UserVerification": "devicebio.hazmat.credentials",
    "Method": "devicebio.protocol",
    "LivenessClaim": "devicebio.protocol",
}

__all__ = [
    "AttemptLimiter",
    "AttemptPolicy",
    "DeviceBioError",
    "KeyringKey",
    "PassphraseKey",
    "Pin",
    "RawKey",
    "Reason",
    "RecoveryCodes",
    "Vault",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'devicebio' has no attribute {name!r}")
