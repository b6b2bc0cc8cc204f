"""A FIDO2 security key as a fallback when the face does not work (or is locked out).

    auth = Authenticator(vault)
    auth.security_keys.enroll_key(device, label="blue key")   # once, the user touches the key
    assertion = auth.authenticate_with_security_key(device, rp_id=..., origin=..., challenge=...)

Use the Authenticator's instance (``auth.security_keys``): it is the one whose lock serialises
this vault's key-counter updates, and ``authenticate_with_security_key`` also clears the face
lockout and signs. :meth:`SecurityKeyFallback.verify` alone only returns the
:class:`~devicebio.hazmat.credentials.UserVerification` that hazmat code would sign.

The device is its own relying party here. It registers a roaming key (USB/NFC, anything
python-fido2 speaks to) under the local RP id :data:`RP_ID` with an origin that is unique to
this vault (:attr:`SecurityKeyFallback.origin`), and checks the key's answers in-process with
python-fido2's :class:`~fido2.server.Fido2Server`: client data type, origin and a fresh random
challenge, RP id hash, user presence, and the signature against the stored public key. On top
of what ``Fido2Server`` does, this module enforces the signature counter (it must increase,
unless the key keeps no counter and both values are zero), so a cloned key that replays an old
counter is refused.

Stored per key (vault kind ``"security_key"``): the credential id, the COSE public key, the
signature counter, the AAGUID and attestation format, timestamps and whether the key verified
the user (PIN/biometric on the key) the last time. Nothing secret: the private key never
leaves the security key.

User verification is *preferred*, never required: a key without a PIN still works, as a
possession factor; whether the key verified its user is recorded (:attr:`KeyInfo.user_verified`).
A key whose PIN is set asks for it through the ``user_interaction`` given to the constructor
(python-fido2's :class:`~fido2.client.UserInteraction`).

Attestation is requested and its signature checked (``packed`` self/basic, ``none``, and the
other formats python-fido2 knows), but no trust anchors are consulted: it proves the response
is internally consistent, not who made the key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from fido2 import cbor
from fido2.attestation import Attestation
from fido2.client import (
    ClientError,
    DefaultClientDataCollector,
    Fido2Client,
    PinRequiredError,
    UserInteraction,
)
from fido2.cose import CoseKey, UnsupportedKey
from fido2.ctap import CtapDevice, CtapError
from fido2.hid import ConnectionFailure, CtapHidDevice
from fido2.server import Fido2Server
from fido2.webauthn import (
    Aaguid,
    AttestationConveyancePreference,
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorAttachment,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from devicebio.errors import DeviceBioError, Reason
from devicebio.hazmat.credentials import UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store.records import (
    SECURITY_KEY_VERSION,
    Kind,
    SecurityKeyBody,
    check_security_key,
)
from devicebio.store.vault import Vault

__all__ = ["KIND", "RP_ID", "KeyInfo", "SecurityKeyFallback", "find_security_keys"]

KIND = Kind.SECURITY_KEY
RP_ID = "devicebio.local"
_CHALLENGE_SIZE = 32
_USER_HANDLE_SIZE = 16
_MAX_LABEL = 64
_ORIGIN_LABEL = b"devicebio/security-key-origin/v1\x00"

# Reasons this module reports. The dedicated members are proposed for devicebio.errors; until
# they exist the nearest current ones stand in, and the switch needs no edit here.
_NOT_ENROLLED: Reason = Reason.SECURITY_KEY_NOT_ENROLLED
_REJECTED: Reason = Reason.SECURITY_KEY_REJECTED
_NOT_TOUCHED: Reason = Reason.SECURITY_KEY_NOT_TOUCHED
_UNAVAILABLE: Reason = Reason.SECURITY_KEY_UNAVAILABLE

# CTAP answers that mean "nobody touched the key" (denied, timed out, or cancelled by us).
_NO_PRESENCE = frozenset(
    {
        CtapError.ERR.OPERATION_DENIED,
        CtapError.ERR.USER_ACTION_TIMEOUT,
        CtapError.ERR.ACTION_TIMEOUT,
        CtapError.ERR.KEEPALIVE_CANCEL,
        CtapError.ERR.UP_REQUIRED,
    }
)


@dataclass(frozen=True)
class KeyInfo:
    """An enrolled security key as :meth:`SecurityKeyFallback.keys` shows it (public data)."""

    label: str
    credential_id: bytes
    algorithm: int  # COSE algorithm of the key's credential (-7 ES256, -8 EdDSA, ...)
    aaguid: str  # the key model's AAGUID; all zeros when the key does not say
    attestation: str  # attestation format the key used at enrolment ("packed", "none", ...)
    sign_count: int
    user_verified: bool  # the key verified its user (PIN/biometric) at its last use
    created_at: float
    last_used_at: float | None


class SecurityKeyFallback:
    """Enrol roaming FIDO2 security keys on this device and verify the user with one.

    ``client_or_device`` arguments take a :class:`fido2.client.Fido2Client` (its client-data
    collector must use :attr:`origin`) or a :class:`fido2.ctap.CtapDevice`, for which the
    client is built here. ``timeout_s`` bounds how long the user has to touch the key.
    """

    def __init__(
        self,
        vault: Vault,
        *,
        user_interaction: UserInteraction | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < timeout_s <= 600:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "timeout_s must be in (0, 600]")
        self._vault = vault
        self._interaction = user_interaction or UserInteraction()
        self._timeout_ms = max(1, round(timeout_s * 1000))
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def origin(self) -> str:
        """The origin this device puts in client data: one per vault, under :data:`RP_ID`."""
        tag = hmac.new(self._vault.device_secret, _ORIGIN_LABEL, "sha256").hexdigest()[:16]
        return f"https://d-{tag}.{RP_ID}"

    def client_for(self, device: CtapDevice) -> Fido2Client:
        """A python-fido2 client for ``device`` that speaks with this device's origin."""
        if not isinstance(device, CtapDevice):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "device must be a fido2 CtapDevice")
        try:
            return Fido2Client(device, DefaultClientDataCollector(self.origin), self._interaction)
        except Exception as exc:  # the device is queried (getInfo) while the client is built
            raise _client_failure(exc, enrolling=False) from None

    # ---- enrolment -------------------------------------------------------------------------

    def enroll_key(self, client_or_device: Fido2Client | CtapDevice, *, label: str) -> KeyInfo:
        """Register a security key under ``label``; the user touches it once.

        A key already enrolled (under any label) is refused by the key itself (exclude list).
        """
        _check_client(client_or_device)
        label = _check_label(label)
        record_id = _record_id(label)
        if self._vault.exists(KIND, record_id):
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT,
                f"a security key labelled {label!r} is already enrolled",
                hint="remove it first, or choose another label",
            )
        existing = [rec for _, rec in self._records()]
        server = self._server()
        options, state = server.register_begin(
            PublicKeyCredentialUserEntity(
                id=secrets.token_bytes(_USER_HANDLE_SIZE), name=label, display_name=label
            ),
            credentials=[_descriptor(rec) for rec in existing],
            resident_key_requirement=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED,
            authenticator_attachment=AuthenticatorAttachment.CROSS_PLATFORM,
            challenge=secrets.token_bytes(_CHALLENGE_SIZE),
        )
        client = self._client(client_or_device)
        try:
            response = client.make_credential(options.public_key)
        except Exception as exc:
            raise _client_failure(exc, enrolling=True) from None
        try:
            auth_data = server.register_complete(state, response)
        except Exception as exc:
            raise DeviceBioError(
                _REJECTED, f"the security key's registration is invalid: {_why(exc)}"
            ) from None
        credential = auth_data.credential_data
        if credential is None:  # register_complete guarantees it; kept for type narrowing
            raise DeviceBioError(_REJECTED, "the registration has no credential")
        public_key = dict(credential.public_key)
        try:
            _checked_key(public_key)
        except ValueError as exc:
            raise DeviceBioError(_REJECTED, f"unusable credential key: {exc}") from None
        now = self._clock()
        record: SecurityKeyBody = {
            "v": SECURITY_KEY_VERSION,
            "label": label,
            "credential_id": bytes(credential.credential_id),
            "public_key": cbor.encode(public_key),
            "aaguid": bytes(credential.aaguid),
            "fmt": response.response.attestation_object.fmt,
            "counter": auth_data.counter,
            "uv": auth_data.is_user_verified(),
            "created_at": now,
            "last_used_at": None,
        }
        self._vault.put(KIND, record_id, record)
        return _info(record)

    # ---- verification ----------------------------------------------------------------------

    def verify(self, client_or_device: Fido2Client | CtapDevice) -> UserVerification:
        """Ask an enrolled key for an assertion over a fresh challenge and check it.

        Returns a verified ``UserVerification`` with method ``security-key``; every failure
        raises :class:`DeviceBioError`: no key enrolled or an unknown key, a key nobody
        touched, a bad signature, origin, challenge or RP id, or a counter that did not
        increase (a cloned key).
        """
        _check_client(client_or_device)
        records = self._records()
        if not records:
            raise DeviceBioError(
                _NOT_ENROLLED,
                "no security key is enrolled on this device",
                hint="enrol one with SecurityKeyFallback.enroll_key",
            )
        credentials = [_attested(rec) for _, rec in records]
        server = self._server()
        options, state = server.authenticate_begin(
            credentials,
            user_verification=UserVerificationRequirement.PREFERRED,
            challenge=secrets.token_bytes(_CHALLENGE_SIZE),
        )
        client = self._client(client_or_device)
        try:
            response = client.get_assertion(options.public_key).get_response(0)
        except Exception as exc:
            raise _client_failure(exc, enrolling=False) from None
        try:
            used = server.authenticate_complete(state, credentials, response)
        except Exception as exc:
            raise DeviceBioError(
                _REJECTED, f"the security key's assertion is invalid: {_why(exc)}"
            ) from None
        auth_data = response.response.authenticator_data
        with self._lock:
            # Re-read under the lock: a concurrent verify may have moved the counter on.
            record_id, record = self._find(bytes(used.credential_id))
            if not _counter_advanced(record["counter"], auth_data.counter):
                raise DeviceBioError(
                    _REJECTED,
                    "the security key's signature counter did not increase: "
                    "it may have been cloned",
                    hint="remove this key and enrol a new one",
                )
            record["counter"] = auth_data.counter
            record["uv"] = auth_data.is_user_verified()
            record["last_used_at"] = self._clock()
            self._vault.put(KIND, record_id, record)
        return UserVerification(
            method=Method.SECURITY_KEY,
            liveness=LivenessClaim.none(),
            model=None,
            verified=True,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    def keys(self) -> list[KeyInfo]:
        """Every enrolled key, oldest first."""
        return sorted((_info(rec) for _, rec in self._records()), key=lambda k: k.created_at)

    def remove(self, label: str) -> None:
        """Forget the key enrolled as ``label`` (the key itself is not touched)."""
        record_id = _record_id(_check_label(label))
        with self._lock:
            if not self._vault.exists(KIND, record_id):
                raise DeviceBioError(_NOT_ENROLLED, f"no security key labelled {label!r}")
            self._vault.delete(KIND, record_id)

    # ---- internals -------------------------------------------------------------------------

    def _server(self) -> Fido2Server:
        origin = self.origin
        server = Fido2Server(
            PublicKeyCredentialRpEntity(id=RP_ID, name="devicebio on this device"),
            attestation=AttestationConveyancePreference.DIRECT,
            # Exactly this vault's origin: client data made for another device is refused.
            verify_origin=lambda got: hmac.compare_digest(got.encode(), origin.encode()),
            verify_attestation=_verify_attestation,
        )
        # fido2 declares the attribute as None-only; it is the request timeout in ms.
        server.timeout = self._timeout_ms  # type: ignore[assignment]
        return server

    def _client(self, client_or_device: Fido2Client | CtapDevice) -> Fido2Client:
        if isinstance(client_or_device, Fido2Client):
            return client_or_device
        return self.client_for(client_or_device)

    def _records(self) -> list[tuple[str, SecurityKeyBody]]:
        return [(rid, _valid_record(self._vault.get(KIND, rid))) for rid in self._vault.ids(KIND)]

    def _find(self, credential_id: bytes) -> tuple[str, SecurityKeyBody]:
        for rid, rec in self._records():
            if hmac.compare_digest(rec["credential_id"], credential_id):
                return rid, rec
        raise DeviceBioError(_NOT_ENROLLED, "the security key was removed during verification")


def find_security_keys() -> list[CtapDevice]:
    """FIDO HID devices plugged into this machine; [] when there are none or HID is off-limits.

    Never raises: a missing hidraw, no permission on /dev/hidraw*, or an unsupported platform
    all just mean "no key found here".
    """
    try:
        return list(CtapHidDevice.list_devices())
    except Exception:
        return []


# --------------------------------------------------------------------------- helpers


def _check_client(client_or_device: object) -> None:
    if not isinstance(client_or_device, Fido2Client | CtapDevice):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "expected a fido2 Fido2Client or CtapDevice")


def _check_label(label: object) -> str:
    if (
        not isinstance(label, str)
        or not 1 <= len(label) <= _MAX_LABEL
        or not label.isprintable()
        or label != label.strip()
    ):
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            f"a key label is 1..{_MAX_LABEL} printable characters without outer spaces",
        )
    return label


def _record_id(label: str) -> str:
    # Vault ids are restricted ASCII; a hash also keeps labels out of any id listing.
    return hashlib.sha256(b"devicebio/security-key/v1\x00" + label.encode()).hexdigest()[:40]


def _checked_key(cose: dict[Any, Any]) -> CoseKey:
    """Parse a COSE public key and make sure its key material actually loads."""
    key = CoseKey.parse(cose)
    if isinstance(key, UnsupportedKey):
        raise ValueError(f"COSE algorithm {cose.get(3)!r} is not supported")
    # CoseKey only builds the cryptography key inside verify(); a deliberately empty
    # signature must fail as a *signature*, anything else means the key itself is broken.
    try:
        key.verify(b"devicebio key probe", b"")
    except InvalidSignature:
        return key
    except Exception as exc:
        raise ValueError(f"COSE key does not load ({type(exc).__name__})") from None
    raise ValueError("COSE key accepted an empty signature")


def _valid_record(value: object) -> SecurityKeyBody:
    """The record's shape (:func:`~devicebio.store.records.check_security_key`), and that its
    public key is canonical CBOR and loads."""
    value = check_security_key(value)
    try:
        raw = value["public_key"]
        cose = cbor.decode(raw)
        if not isinstance(cose, dict) or cbor.encode(cose) != raw:
            raise ValueError("not a canonical CBOR map")
        _checked_key(cose)
    except Exception:
        raise DeviceBioError(
            Reason.RECORD_CORRUPT, "security-key record holds an unusable public key"
        ) from None
    return value


def _attested(record: SecurityKeyBody) -> AttestedCredentialData:
    return AttestedCredentialData.create(
        Aaguid(record["aaguid"]),
        record["credential_id"],
        CoseKey.parse(_cose(record)),
    )


def _cose(record: SecurityKeyBody) -> dict[int, Any]:
    """The COSE map of a record that :func:`_valid_record` accepted."""
    return cast(dict[int, Any], cbor.decode(record["public_key"]))


def _descriptor(record: SecurityKeyBody) -> PublicKeyCredentialDescriptor:
    return PublicKeyCredentialDescriptor(
        type=PublicKeyCredentialType.PUBLIC_KEY, id=record["credential_id"]
    )


def _info(record: SecurityKeyBody) -> KeyInfo:
    return KeyInfo(
        label=record["label"],
        credential_id=record["credential_id"],
        algorithm=int(_cose(record)[3]),
        aaguid=str(Aaguid(record["aaguid"])),
        attestation=record["fmt"],
        sign_count=record["counter"],
        user_verified=record["uv"],
        created_at=float(record["created_at"]),
        last_used_at=None if record["last_used_at"] is None else float(record["last_used_at"]),
    )


def _counter_advanced(stored: int, received: int) -> bool:
    # WebAuthn §6.1.1: a key without a counter reports 0 forever, which is fine; any other
    # value that does not go up means two copies of the key exist.
    return received > stored or (received == 0 and stored == 0)


def _verify_attestation(attestation: AttestationObject, client_data_hash: bytes) -> None:
    """Check the attestation statement's own signature (no trust anchors: see module doc)."""
    verifier = Attestation.for_type(attestation.fmt)()
    verifier.verify(attestation.att_stmt, attestation.auth_data, client_data_hash)


def _why(exc: Exception) -> str:
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__


def _client_failure(exc: Exception, *, enrolling: bool) -> DeviceBioError:
    """Turn what python-fido2 and the transport raise into one typed error."""
    cause: object = exc.cause if isinstance(exc, ClientError) else exc
    code = cause.code if isinstance(cause, CtapError) else None
    if isinstance(exc, PinRequiredError) or code in (
        CtapError.ERR.PIN_INVALID,
        CtapError.ERR.PIN_BLOCKED,
        CtapError.ERR.PIN_AUTH_BLOCKED,
        CtapError.ERR.UV_BLOCKED,
    ):
        return DeviceBioError(
            Reason.USER_NOT_VERIFIED,
            "the security key needs its PIN, which was not given or was wrong",
            hint="pass a fido2 UserInteraction that asks the user for the key's PIN",
        )
    if code in _NO_PRESENCE or (
        isinstance(exc, ClientError) and exc.code is ClientError.ERR.TIMEOUT
    ):
        return DeviceBioError(
            _NOT_TOUCHED,
            "the security key was not touched in time",
            hint="touch the key when it blinks, then try again",
        )
    if code is CtapError.ERR.CREDENTIAL_EXCLUDED or (
        enrolling and isinstance(exc, ClientError) and exc.code is ClientError.ERR.DEVICE_INELIGIBLE
    ):
        return DeviceBioError(_REJECTED, "this security key is already enrolled")
    if code is CtapError.ERR.NO_CREDENTIALS or (
        isinstance(exc, ClientError) and exc.code is ClientError.ERR.DEVICE_INELIGIBLE
    ):
        return DeviceBioError(
            _NOT_ENROLLED,
            "this security key is not enrolled on this device",
            hint="use an enrolled key, or enrol this one",
        )
    if isinstance(exc, ClientError) and exc.code is ClientError.ERR.BAD_REQUEST and code is None:
        return DeviceBioError(
            Reason.INVALID_ARGUMENT,
            "the fido2 client refused the request (is its origin SecurityKeyFallback.origin?)",
        )
    if isinstance(exc, ClientError) and exc.code is ClientError.ERR.CONFIGURATION_UNSUPPORTED:
        detail = str(exc.cause) if exc.cause else "unsupported configuration"
        return DeviceBioError(_REJECTED, f"the security key cannot do what is needed: {detail}")
    if isinstance(cause, OSError | ConnectionFailure):
        return DeviceBioError(
            _UNAVAILABLE,
            f"the security key could not be reached ({type(cause).__name__})",
            hint="plug the key in (again) and retry",
        )
    if code is not None:
        return DeviceBioError(_REJECTED, f"the security key answered {code.name}")
    return DeviceBioError(
        Reason.MALFORMED_DATA, f"unexpected answer from the security key ({type(exc).__name__})"
    )
