"""devicebio: on-device face authentication that speaks WebAuthn.

The public API is what this module exports; everything loads on first use (PEP 562), so
``import devicebio.protocol`` (what the relying party's verifier shares) loads nothing else,
and nothing here pulls in numpy, OpenCV or onnxruntime before a face is needed.

:class:`Authenticator` is the ceremony: enrol, authenticate by face (with liveness), fall back
to a PIN, a recovery code or a security key, and sign only what it verified itself. Primitives
that sign whatever verification they are told, seal records or write files live in
:mod:`devicebio.hazmat`; an app never needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # the ceremony
    "Authenticator": "devicebio.authenticator",
    "AuthPolicy": "devicebio.authenticator",
    "AuthResult": "devicebio.authenticator",
    "Consent": "devicebio.authenticator",
    "EnrolledUser": "devicebio.authenticator",
    "EnrollmentResult": "devicebio.authenticator",
    "Outcome": "devicebio.outcome",
    "OutcomeCode": "devicebio.outcome",
    # the vault and its keys
    "Vault": "devicebio.store.vault",
    "KeyringKey": "devicebio.store.vault",
    "PassphraseKey": "devicebio.store.vault",
    "RawKey": "devicebio.store.vault",
    # fallbacks
    "AttemptPolicy": "devicebio.fallback",
    "Fallback": "devicebio.fallback",
    "Pin": "devicebio.fallback",
    "RecoveryCodes": "devicebio.fallback",
    # faces, frames, liveness
    "ActiveLiveness": "devicebio.liveness",
    "LivenessConfig": "devicebio.liveness",
    "LivenessFailure": "devicebio.liveness",
    "FacePipeline": "devicebio.vision.pipeline",
    "Frame": "devicebio.sources",
    "StaticFrames": "devicebio.sources",
    "open_source": "devicebio.sources",
    # payments: what the user is shown and signs (Secure Payment Confirmation shape)
    "PaymentDetails": "devicebio.protocol.payment",
    "Amount": "devicebio.protocol.payment",
    "Instrument": "devicebio.protocol.payment",
    # what the device hands the relying party
    "Assertion": "devicebio.signed",
    "Registration": "devicebio.signed",
    "CredentialInfo": "devicebio.signed",
    # errors
    "DeviceBioError": "devicebio.errors",
    "Reason": "devicebio.errors",
}

__all__ = [
    "ActiveLiveness",
    "Amount",
    "Assertion",
    "AttemptPolicy",
    "AuthPolicy",
    "AuthResult",
    "Authenticator",
    "Consent",
    "CredentialInfo",
    "DeviceBioError",
    "EnrolledUser",
    "EnrollmentResult",
    "FacePipeline",
    "Fallback",
    "Frame",
    "Instrument",
    "KeyringKey",
    "LivenessConfig",
    "LivenessFailure",
    "Outcome",
    "OutcomeCode",
    "PassphraseKey",
    "PaymentDetails",
    "Pin",
    "RawKey",
    "Reason",
    "RecoveryCodes",
    "Registration",
    "StaticFrames",
    "Vault",
    "open_source",
]

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time __getattr__ loads on demand
    from devicebio.authenticator import (
        Authenticator,
        AuthPolicy,
        AuthResult,
        Consent,
        EnrolledUser,
        EnrollmentResult,
    )
    from devicebio.errors import DeviceBioError, Reason
    from devicebio.fallback import AttemptPolicy, Fallback, Pin, RecoveryCodes
    from devicebio.liveness import ActiveLiveness, LivenessConfig, LivenessFailure
    from devicebio.outcome import Outcome, OutcomeCode
    from devicebio.protocol.payment import Amount, Instrument, PaymentDetails
    from devicebio.signed import Assertion, CredentialInfo, Registration
    from devicebio.sources import Frame, StaticFrames, open_source
    from devicebio.store.vault import KeyringKey, PassphraseKey, RawKey, Vault
    from devicebio.vision.pipeline import FacePipeline


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'devicebio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
