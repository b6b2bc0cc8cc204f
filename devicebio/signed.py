"""What the device hands a relying party, as the :class:`devicebio.Authenticator` returns it.

:class:`Registration` and :class:`Assertion` hold the exact signed bytes and give their
WebAuthn JSON form (``PublicKeyCredential.toJSON()``), which any WebAuthn relying-party
library accepts; :class:`CredentialInfo` describes a credential on this device without key
material. Holding one is harmless: what signs them lives in :mod:`devicebio.hazmat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devicebio import protocol
from devicebio.errors import protocol_errors

__all__ = ["Assertion", "CredentialInfo", "Registration"]


@dataclass(frozen=True)
class Registration:
    """A new credential: the raw bytes and their WebAuthn JSON form (:meth:`to_json`)."""

    rp_id: str
    user: str
    user_handle: bytes
    credential_id: bytes
    device_id: bytes
    client_data_json: bytes
    attestation_object: bytes

    @protocol_errors()
    def to_json(self) -> dict[str, Any]:
        """``PublicKeyCredential.toJSON()`` form, ready for any WebAuthn relying party."""
        return protocol.registration_to_json(
            credential_id=self.credential_id,
            client_data_json=self.client_data_json,
            attestation_object=self.attestation_object,
        )


@dataclass(frozen=True)
class Assertion:
    """A signed assertion: the raw bytes and their WebAuthn JSON form (:meth:`to_json`)."""

    rp_id: str
    user: str
    user_handle: bytes
    credential_id: bytes
    sign_count: int
    client_data_json: bytes
    authenticator_data: bytes
    signature: bytes

    @protocol_errors()
    def to_json(self) -> dict[str, Any]:
        """``PublicKeyCredential.toJSON()`` form, ready for any WebAuthn relying party."""
        return protocol.authentication_to_json(
            credential_id=self.credential_id,
            client_data_json=self.client_data_json,
            authenticator_data=self.authenticator_data,
            signature=self.signature,
            user_handle=self.user_handle,
        )


@dataclass(frozen=True)
class CredentialInfo:
    """A credential on this device, as ``Authenticator.credentials()`` lists it: never key
    material."""

    rp_id: str
    user: str
    user_handle: bytes
    credential_id: bytes
    sign_count: int
    created_at: int
