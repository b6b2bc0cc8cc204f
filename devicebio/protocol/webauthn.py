"""WebAuthn's bytes and JSON forms, strictly parsed into python-fido2's bytes-backed classes.

Everything here speaks standard WebAuthn, built on python-fido2's data classes
(:class:`~fido2.webauthn.AuthenticatorData`, :class:`~fido2.webauthn.AttestationObject`,
:class:`~fido2.webauthn.CollectedClientData`, :mod:`fido2.cose`), so the exact signed bytes
are kept and never re-encoded before a signature check.

Parsers are strict: every malformed input raises ``ProtocolError(MALFORMED_DATA)`` and
nothing else. Binary CBOR must be in the CTAP2 canonical form that python-fido2 writes: what
a decode/re-encode round trip would not give back byte for byte is refused (for assertions
read in one pass by :func:`~devicebio.protocol.encoding.decode_canonical`, which accepts
exactly that set), so duplicate map keys, indefinite lengths, floats, tags, ``null`` and
truncated strings are too. A parsed response carries its decoded ``devicebio`` extension,
so nobody decodes it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import cbor2
from fido2 import cbor
from fido2.cose import EdDSA
from fido2.webauthn import (
    Aaguid,
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)

from devicebio.protocol.encoding import (
    MAX_JSON_BYTES,
    as_bytes,
    b64url_decode,
    b64url_encode,
    decode_canonical,
    invalid,
    json_loads,
    malformed,
    quick_init,
    strict,
)
from devicebio.protocol.errors import ProtocolError, ProtocolReason
from devicebio.protocol.extension import (
    EXTENSION_ID,
    DevicebioExtension,
    devicebio_extension_of,
    plain_extension,
)

COSE_ALG_EDDSA = -8
# A fixed AAGUID naming "a devicebio software authenticator". Self-attestation proves nothing
# about the device, so this is a label for RP dashboards, not a trust anchor.
DEVICEBIO_AAGUID = Aaguid(bytes.fromhex("6465766963656269f0a1b2c3d4e5f601"))

# Bounds that keep hostile inputs cheap to refuse.
MAX_CREDENTIAL_ID = 1023  # WebAuthn §7.1: credential ids longer than 1023 bytes are refused
MAX_USER_HANDLE = 64  # WebAuthn: user handles are at most 64 bytes
_MAX_B64_FIELD = 4 * MAX_JSON_BYTES // 3 + 4  # a JSON member never decodes past the JSON cap

# SubjectPublicKeyInfo DER prefix of an Ed25519 key (RFC 8410), used for the L3 `publicKey`.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


# --------------------------------------------------------------------------- COSE keys


def ed25519_cose_key(public_key: bytes) -> EdDSA:
    """COSE_Key (OKP, crv Ed25519, alg EdDSA -8) for a 32-byte Ed25519 public key."""
    if type(public_key) is not bytes or len(public_key) != 32:
        invalid("an Ed25519 public key is 32 bytes")
    return EdDSA({1: 1, 3: COSE_ALG_EDDSA, -1: 6, -2: public_key})


@strict
def ed25519_public_key_from_cose(key: bytes | Mapping[int, Any]) -> bytes:
    """The raw 32-byte key of a COSE_Key that is exactly OKP/Ed25519/EdDSA, else MALFORMED_DATA.

    Accepts the CBOR bytes (canonical only) or an already-decoded map.
    """
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
        obj = cbor.decode(raw)
        if cbor.encode(obj) != raw:
            malformed("COSE key is not canonical CBOR")
    else:
        obj = key
    if not isinstance(obj, Mapping) or set(obj) != {1, 3, -1, -2}:
        malformed("COSE key must have exactly kty, alg, crv and x")
    header = (obj[1], obj[3], obj[-1])  # kty, alg, crv
    if any(type(v) is not int for v in header) or header != (1, COSE_ALG_EDDSA, 6):
        malformed("COSE key is not OKP/Ed25519/EdDSA")
    x = obj[-2]
    if not isinstance(x, bytes) or len(x) != 32:
        malformed("Ed25519 x must be 32 bytes")
    return bytes(x)


def _ed25519_spki(public_key: bytes) -> bytes:
    return _ED25519_SPKI_PREFIX + public_key


_AT = int(AuthenticatorData.FLAG.AT)
_ED = int(AuthenticatorData.FLAG.ED)


@strict
def parse_authenticator_data(data: bytes) -> AuthenticatorData:
    """Strictly parse authenticatorData; the returned object *is* the received bytes."""
    raw = as_bytes(data, "authenticatorData")
    if len(raw) < 37:
        malformed("authenticatorData shorter than 37 bytes")
    if raw[32] & _AT:
        return _parse_attested_authenticator_data(raw)
    # Assertions: the fixed 37-byte header, then (ED) one canonical CBOR map, read in one
    # pass by decode_canonical, so fido2 need not decode it a second time: the object is
    # fido2's own class, its fields set exactly as fido2's constructor sets them (a
    # property test compares the two field by field).
    flags = raw[32]
    extensions: Any = None
    if flags & _ED:
        extensions = decode_canonical(raw[37:])
        if not isinstance(extensions, dict):
            malformed("authenticator extensions must be a map")
    elif len(raw) != 37:
        malformed("authenticatorData is not canonical")
    return _assertion_auth_data(raw, extensions)


def _assertion_auth_data(raw: bytes, extensions: dict[str, Any] | None) -> AuthenticatorData:
    parsed = AuthenticatorData.__new__(AuthenticatorData, raw)
    # Straight into the instance dict: one call, not one object.__setattr__ per field.
    parsed.__dict__.update(
        rp_id_hash=raw[:32],
        flags=raw[32],
        counter=int.from_bytes(raw[33:37], "big"),
        credential_data=None,
        extensions=extensions,
    )
    return parsed


def _plain_assertion(raw: bytes) -> tuple[AuthenticatorData, DevicebioExtension] | None:
    """The common assertion's authenticatorData read with cbor2's C decoder, or ``None``.

    The accept side only: no attested credential data, and extensions that are exactly one
    devicebio extension of the plain shape (:func:`plain_extension`), encoded as cbor2
    re-encodes what it decoded (so minimal heads, definite lengths, no duplicate keys,
    nothing after) with the keys in canonical order: the one canonical encoding of the
    decoded value, which :func:`parse_authenticator_data` accepts with equal fields and
    :func:`devicebio_extension_of` decodes to an equal extension (property test). Anything
    else returns ``None`` and takes the strict path, which then decides and says why.
    """
    if len(raw) <= 37 or raw[32] & (_AT | _ED) != _ED:
        return None
    body = raw[37:]
    try:
        extensions = cbor2.loads(body)
    except Exception:  # any refusal is the strict path's to explain
        return None
    if type(extensions) is not dict or len(extensions) != 1:
        return None
    extension = plain_extension(extensions.get(EXTENSION_ID))
    if extension is None or cbor2.dumps(extensions) != body:
        return None
    return _assertion_auth_data(raw, extensions), extension


def _parse_attested_authenticator_data(raw: bytes) -> AuthenticatorData:
    parsed = AuthenticatorData(raw)
    # fido2's decoder is lenient (null reads as False, short strings are cut); a canonical
    # re-encode that differs from the input is how that leniency is caught.
    again = AuthenticatorData.create(
        parsed.rp_id_hash,
        parsed.flags,
        parsed.counter,
        bytes(parsed.credential_data or b""),
        parsed.extensions,
    )
    if bytes(again) != raw:
        malformed("authenticatorData is not canonical")
    if parsed.has_extension_data() and not isinstance(parsed.extensions, dict):
        malformed("authenticator extensions must be a map")
    assert parsed.credential_data is not None  # the AT flag is set
    cid = parsed.credential_data.credential_id
    if not 1 <= len(cid) <= MAX_CREDENTIAL_ID:
        malformed("credential id length out of range")
    return parsed


@strict
def parse_attestation_object(data: bytes) -> AttestationObject:
    """Strictly parse an attestation object (canonical CBOR map of fmt, attStmt, authData)."""
    raw = as_bytes(data, "attestationObject")
    obj = cbor.decode(raw)
    if not isinstance(obj, dict) or set(obj) != {"fmt", "attStmt", "authData"}:
        malformed("attestationObject must map exactly fmt, attStmt and authData")
    if not isinstance(obj["fmt"], str) or not isinstance(obj["authData"], bytes):
        malformed("attestationObject fmt/authData mistyped")
    stmt = obj["attStmt"]
    if not isinstance(stmt, dict) or not all(isinstance(k, str) for k in stmt):
        malformed("attStmt must be a map with text keys")
    if cbor.encode(obj) != raw:
        malformed("attestationObject is not canonical")
    auth_data = parse_authenticator_data(obj["authData"])
    if auth_data.credential_data is None:
        malformed("attestationObject authData lacks attested credential data")
    return AttestationObject(raw)


@strict
def parse_client_data(data: bytes) -> CollectedClientData:
    """Strictly parse clientDataJSON; the returned object *is* the received bytes.

    type, challenge (canonical base64url) and origin must be strings; crossOrigin, when
    present, a bool; topOrigin is only allowed alongside crossOrigin true. Other members
    are allowed (the spec lets clients add them) but must be valid JSON.
    """
    raw = as_bytes(data, "clientDataJSON")
    obj = json_loads(raw, "clientDataJSON")
    if not isinstance(obj, dict):
        malformed("clientDataJSON must be an object")
    for key in ("type", "challenge", "origin"):
        if not isinstance(obj.get(key), str):
            malformed(f"clientDataJSON.{key} must be a string")
    challenge = b64url_decode(obj["challenge"])
    cross = obj.get("crossOrigin", False)
    if type(cross) is not bool:
        malformed("clientDataJSON.crossOrigin must be a bool")
    if "topOrigin" in obj and (not cross or not isinstance(obj["topOrigin"], str)):
        malformed("clientDataJSON.topOrigin only with crossOrigin true")
    # fido2's own class over the received bytes, its fields set as its constructor sets
    # them, from the strict parse above instead of a second, lenient json.loads.
    parsed = CollectedClientData.__new__(CollectedClientData, raw)
    parsed.__dict__.update(
        _data=obj, type=obj["type"], challenge=challenge, origin=obj["origin"], cross_origin=cross
    )
    return parsed


# --------------------------------------------------------------------------- JSON forms


def registration_to_json(
    *, credential_id: bytes, client_data_json: bytes, attestation_object: bytes
) -> dict[str, Any]:
    """PublicKeyCredential.toJSON() of a registration (WebAuthn L3 RegistrationResponseJSON)."""
    att = parse_attestation_object(attestation_object)
    assert att.auth_data.credential_data is not None  # parse_attestation_object ensures it
    cose = att.auth_data.credential_data.public_key
    response: dict[str, Any] = {
        "clientDataJSON": b64url_encode(client_data_json),
        "authenticatorData": b64url_encode(att.auth_data),
        "transports": ["internal"],
        "publicKeyAlgorithm": cose.get(3),
        "attestationObject": b64url_encode(attestation_object),
    }
    if cose.get(3) == COSE_ALG_EDDSA:
        response["publicKey"] = b64url_encode(_ed25519_spki(ed25519_public_key_from_cose(cose)))
    return {
        "id": b64url_encode(credential_id),
        "rawId": b64url_encode(credential_id),
        "type": "public-key",
        "response": response,
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
    }


def authentication_to_json(
    *,
    credential_id: bytes,
    client_data_json: bytes,
    authenticator_data: bytes,
    signature: bytes,
    user_handle: bytes | None,
) -> dict[str, Any]:
    """PublicKeyCredential.toJSON() of an assertion (AuthenticationResponseJSON)."""
    response: dict[str, Any] = {
        "clientDataJSON": b64url_encode(client_data_json),
        "authenticatorData": b64url_encode(authenticator_data),
        "signature": b64url_encode(signature),
    }
    if user_handle is not None:
        response["userHandle"] = b64url_encode(user_handle)
    return {
        "id": b64url_encode(credential_id),
        "rawId": b64url_encode(credential_id),
        "type": "public-key",
        "response": response,
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
    }


@dataclass(frozen=True)
class RegistrationResponseData:
    """A parsed registration response. ``type`` is returned as received: checking it is the
    verifier's job (it has its own reason for a wrong type)."""

    credential_id: bytes
    type: str
    client_data: CollectedClientData
    attestation: AttestationObject
    authenticator_attachment: str | None
    transports: tuple[str, ...]
    client_extension_results: Mapping[str, Any] = field(default_factory=dict)
    extension: DevicebioExtension | None = None  # decoded from the attested authenticatorData

    @property
    def client_data_json(self) -> bytes:
        return bytes(self.client_data)

    @property
    def attestation_object(self) -> bytes:
        return bytes(self.attestation)


@quick_init
@dataclass(frozen=True)
class AuthenticationResponseData:
    """A parsed assertion. The byte fields are exactly what was received."""

    credential_id: bytes
    type: str
    client_data: CollectedClientData
    authenticator_data: AuthenticatorData
    signature: bytes
    user_handle: bytes | None
    authenticator_attachment: str | None
    client_extension_results: Mapping[str, Any] = field(default_factory=dict)
    extension: DevicebioExtension | None = None  # decoded from authenticatorData

    @property
    def client_data_json(self) -> bytes:
        return bytes(self.client_data)


_REG_TOP = {"id", "rawId", "type", "response", "authenticatorAttachment", "clientExtensionResults"}
_REG_RESPONSE = {
    "clientDataJSON",
    "attestationObject",
    "authenticatorData",
    "transports",
    "publicKeyAlgorithm",
    "publicKey",
}
_AUTH_RESPONSE = {"clientDataJSON", "authenticatorData", "signature", "userHandle"}


def _load_credential_json(value: object) -> dict[str, Any]:
    if isinstance(value, bytes | bytearray | memoryview | str):
        raw = bytes(value) if not isinstance(value, str) else value
        value = json_loads(raw, "credential JSON")
        if type(value) is dict:
            return value  # our own parse: a fresh dict, no copy needed
    if not isinstance(value, Mapping):
        malformed("credential JSON must be an object")
    return dict(value)


def _only_keys(obj: Mapping[str, Any], allowed: set[str], required: set[str], what: str) -> None:
    keys = obj.keys()
    # map(isinstance, ...) and the key-view comparisons run in C: no generator per call.
    if not all(map(isinstance, keys, repeat(str))):
        malformed(f"{what} keys must be strings")
    if not keys <= allowed:
        malformed(f"{what} has unknown members {sorted(keys - allowed)}")
    if not required <= keys:
        malformed(f"{what} lacks {sorted(required - keys)}")


def _b64_field(value: object, what: str) -> bytes:
    if isinstance(value, str) and len(value) > _MAX_B64_FIELD:
        malformed(f"{what} is too long")
    try:
        return b64url_decode(value)  # type: ignore[arg-type]
    except ProtocolError:
        malformed(f"{what} is not canonical unpadded base64url")


def _common_top(obj: dict[str, Any]) -> tuple[bytes, str, str | None, Mapping[str, Any]]:
    _only_keys(obj, _REG_TOP, {"id", "rawId", "type", "response"}, "credential")
    if not isinstance(obj["id"], str):
        malformed("id must be a string")
    credential_id = _b64_field(obj["rawId"], "rawId")
    if obj["id"] != obj["rawId"]:
        malformed("id and rawId differ")
    if not 1 <= len(credential_id) <= MAX_CREDENTIAL_ID:
        malformed("credential id length out of range")
    if not isinstance(obj["type"], str):
        malformed("type must be a string")
    attachment = obj.get("authenticatorAttachment")
    if attachment is not None and not isinstance(attachment, str):
        malformed("authenticatorAttachment must be a string")
    results = obj.get("clientExtensionResults", {})
    if not isinstance(results, Mapping) or not all(map(isinstance, results, repeat(str))):
        malformed("clientExtensionResults must be an object")
    if not isinstance(obj["response"], Mapping):
        malformed("response must be an object")
    return credential_id, obj["type"], attachment, dict(results)


@strict
def parse_registration_json(value: Mapping[str, Any] | str | bytes) -> RegistrationResponseData:
    """Strictly parse a RegistrationResponseJSON (dict, or its JSON text/bytes)."""
    obj = _load_credential_json(value)
    credential_id, type_, attachment, results = _common_top(obj)
    resp = obj["response"]
    _only_keys(resp, _REG_RESPONSE, {"clientDataJSON", "attestationObject"}, "response")
    client_data = parse_client_data(_b64_field(resp["clientDataJSON"], "clientDataJSON"))
    attestation = parse_attestation_object(
        _b64_field(resp["attestationObject"], "attestationObject")
    )
    cred_data = attestation.auth_data.credential_data
    assert cred_data is not None  # parse_attestation_object ensures it
    if cred_data.credential_id != credential_id:
        malformed("rawId differs from the attested credential id")
    # The L3 convenience members duplicate signed data; when present they must agree with it.
    if "authenticatorData" in resp and _b64_field(resp["authenticatorData"], "authData") != bytes(
        attestation.auth_data
    ):
        malformed("authenticatorData differs from the attestation object's")
    if "publicKeyAlgorithm" in resp and (
        type(resp["publicKeyAlgorithm"]) is not int
        or resp["publicKeyAlgorithm"] != cred_data.public_key.get(3)
    ):
        malformed("publicKeyAlgorithm differs from the credential key")
    if "publicKey" in resp:
        spki = _b64_field(resp["publicKey"], "publicKey")
        if cred_data.public_key.get(3) == COSE_ALG_EDDSA and spki != _ed25519_spki(
            ed25519_public_key_from_cose(cred_data.public_key)
        ):
            malformed("publicKey differs from the credential key")
    transports = resp.get("transports", [])
    if not isinstance(transports, list) or not all(isinstance(t, str) for t in transports):
        malformed("transports must be a list of strings")
    return RegistrationResponseData(
        credential_id=credential_id,
        type=type_,
        client_data=client_data,
        attestation=attestation,
        authenticator_attachment=attachment,
        transports=tuple(transports),
        client_extension_results=results,
        extension=_extension(attestation.auth_data),
    )


@strict
def parse_authentication_json(
    value: Mapping[str, Any] | str | bytes,
) -> AuthenticationResponseData:
    """Strictly parse an AuthenticationResponseJSON (dict, or its JSON text/bytes)."""
    obj = _load_credential_json(value)
    credential_id, type_, attachment, results = _common_top(obj)
    resp = obj["response"]
    _only_keys(
        resp, _AUTH_RESPONSE, {"clientDataJSON", "authenticatorData", "signature"}, "response"
    )
    client_data = parse_client_data(_b64_field(resp["clientDataJSON"], "clientDataJSON"))
    raw_auth_data = _b64_field(resp["authenticatorData"], "authenticatorData")
    plain = _plain_assertion(raw_auth_data)
    if plain is None:
        auth_data, extension = parse_authenticator_data(raw_auth_data), None
    else:
        auth_data, extension = plain
    signature = _b64_field(resp["signature"], "signature")
    if not signature:
        malformed("empty signature")
    user_handle: bytes | None = None
    if resp.get("userHandle") is not None:
        user_handle = _b64_field(resp["userHandle"], "userHandle")
        if not 1 <= len(user_handle) <= MAX_USER_HANDLE:
            malformed("userHandle must be 1..64 bytes")
    return AuthenticationResponseData(
        credential_id=credential_id,
        type=type_,
        client_data=client_data,
        authenticator_data=auth_data,
        signature=signature,
        user_handle=user_handle,
        authenticator_attachment=attachment,
        client_extension_results=results,
        extension=_extension(auth_data) if plain is None else extension,
    )


def _extension(auth_data: AuthenticatorData) -> DevicebioExtension | None:
    # A well-formed WebAuthn response whose devicebio extension is bad is refused with its
    # own reason, so a relying party can tell "not WebAuthn" from "not a valid claim".
    try:
        return devicebio_extension_of(auth_data)
    except ProtocolError as exc:
        raise ProtocolError(ProtocolReason.EXTENSION_INVALID, exc.detail) from None


def attested_credential_data(credential_id: bytes, public_key: bytes) -> AttestedCredentialData:
    """AttestedCredentialData for a devicebio Ed25519 credential."""
    if not 1 <= len(credential_id) <= MAX_CREDENTIAL_ID:
        invalid("credential id length out of range")
    return AttestedCredentialData.create(
        DEVICEBIO_AAGUID, credential_id, ed25519_cose_key(public_key)
    )
