"""What the device and the relying party both speak: the one place devicebio's bytes on the
wire are defined.

Both packages import this package: the device SDK to *build* registrations and assertions,
the verifier to *parse* them. It imports only the standard library, cbor2 and fido2 — never
numpy, OpenCV or onnxruntime, and nothing else of ``devicebio`` (``import verifier`` loads
``devicebio.protocol`` and no other ``devicebio`` module).

- :mod:`.encoding` — strict base64url, canonical CBOR, strict JSON;
- :mod:`.extension` — the ``devicebio`` authenticator extension (how the user was verified);
- :mod:`.liveness_plan` — the prompt sequence both sides derive from the RP's challenge;
- :mod:`.payment` — a payment the user approved, in the Secure Payment Confirmation shape;
- :mod:`.webauthn` — WebAuthn binary and JSON forms on python-fido2's bytes-backed classes;
- :mod:`.files` — the one crash-safe file writer both sides use;
- :mod:`.errors` — :class:`ProtocolError`, the only exception raised here; each side
  translates it into its own error at one boundary.
"""

from __future__ import annotations

from devicebio.protocol.encoding import MAX_JSON_BYTES, b64url_decode, b64url_encode
from devicebio.protocol.errors import ProtocolError, ProtocolReason
from devicebio.protocol.extension import (
    EXTENSION_ID,
    DevicebioExtension,
    LivenessClaim,
    Method,
    devicebio_extension_of,
)
from devicebio.protocol.files import atomic_write
from devicebio.protocol.liveness_plan import (
    CHALLENGE_BOUND_KINDS,
    LIVENESS_KIND,
    LIVENESS_KIND_PASSIVE,
    Prompt,
    PromptStep,
    liveness_expectation,
    liveness_plan,
    liveness_sequence_hash,
    minimum_frames,
)
from devicebio.protocol.payment import (
    PAYMENT_TYPE,
    Amount,
    Instrument,
    PaymentDetails,
    client_payment,
    payment_client_data,
)
from devicebio.protocol.webauthn import (
    COSE_ALG_EDDSA,
    DEVICEBIO_AAGUID,
    MAX_CREDENTIAL_ID,
    MAX_USER_HANDLE,
    AuthenticationResponseData,
    RegistrationResponseData,
    attested_credential_data,
    authentication_to_json,
    ed25519_cose_key,
    ed25519_public_key_from_cose,
    parse_attestation_object,
    parse_authentication_json,
    parse_authenticator_data,
    parse_client_data,
    parse_registration_json,
    registration_to_json,
)

__all__ = [
    "CHALLENGE_BOUND_KINDS",
    "COSE_ALG_EDDSA",
    "DEVICEBIO_AAGUID",
    "EXTENSION_ID",
    "LIVENESS_KIND",
    "LIVENESS_KIND_PASSIVE",
    "MAX_CREDENTIAL_ID",
    "MAX_JSON_BYTES",
    "MAX_USER_HANDLE",
    "PAYMENT_TYPE",
    "Amount",
    "AuthenticationResponseData",
    "DevicebioExtension",
    "Instrument",
    "LivenessClaim",
    "Method",
    "PaymentDetails",
    "Prompt",
    "PromptStep",
    "ProtocolError",
    "ProtocolReason",
    "RegistrationResponseData",
    "atomic_write",
    "attested_credential_data",
    "authentication_to_json",
    "b64url_decode",
    "b64url_encode",
    "client_payment",
    "devicebio_extension_of",
    "ed25519_cose_key",
    "ed25519_public_key_from_cose",
    "liveness_expectation",
    "liveness_plan",
    "liveness_sequence_hash",
    "minimum_frames",
    "parse_attestation_object",
    "parse_authentication_json",
    "parse_authenticator_data",
    "parse_client_data",
    "parse_registration_json",
    "payment_client_data",
    "registration_to_json",
]
