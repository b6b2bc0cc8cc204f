"""Device credentials that speak WebAuthn. **Hazardous materials.**

:class:`Credentials` signs for whatever :class:`UserVerification` its caller hands it: nothing
here checks that a face was matched, a liveness session passed or a PIN was typed. A caller that
builds ``UserVerification(Method.FACE, <a passed LivenessClaim>, ...)`` gets an assertion every
relying party accepts as a strong face verification. The safe path is
:class:`devicebio.Authenticator`, which verifies the user itself and keeps this object private.

One Ed25519 key per (RP id, user), living only inside the vault (record kind
``"credential"``); this object never keeps a key in memory between calls. Registration gives a
``packed`` self-attestation; authentication gives authenticatorData + clientDataJSON + an
Ed25519 signature, with the ``devicebio`` extension saying how the user was verified. Both
verify unchanged with python-fido2's ``Fido2Server`` and py_webauthn.

The SDK plays both the WebAuthn client (it builds clientDataJSON and checks that the origin
may use the RP id, as a browser would) and the authenticator.

Ordering guarantee: the signature counter is incremented and durably written to the vault
*before* a signature is computed, so a crash can skip a counter value but never reuse one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.metadata
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import nacl.signing
import nacl.utils
from fido2.rpid import verify_rp_id
from fido2.webauthn import AttestationObject, AuthenticatorData, CollectedClientData

from devicebio import protocol
from devicebio.errors import DeviceBioError, Reason, protocol_errors
from devicebio.protocol import DevicebioExtension, LivenessClaim, Method, PaymentDetails
from devicebio.signed import Assertion, CredentialInfo, Registration
from devicebio.store.records import (
    CREDENTIAL_VERSION,
    MAX_COUNTER,
    CredentialBody,
    Kind,
    check_credential,
)

# The signed results are defined in devicebio.signed (no hazard in holding one); they are
# re-exported here because Credentials returns them.
__all__ = [
    "Assertion",
    "CredentialInfo",
    "Credentials",
    "Registration",
    "UserVerification",
]

KIND = Kind.CREDENTIAL
_MAX_USER_NAME = 256
_CHALLENGE_MIN, _CHALLENGE_MAX = 16, 1024
_CREDENTIAL_ID_SIZE = 32
_RP_ID_RE = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
# Domain separation for the per-RP device id, so the device secret can serve other
# derivations without a collision with this one.
_DEVICE_ID_LABEL = b"devicebio/device-id/v1\x00"

_F = AuthenticatorData.FLAG


class _Vault(Protocol):
    """What credentials need from :class:`devicebio.store.vault.Vault`."""

    def put(self, kind: str, record_id: str, value: Any) -> None: ...
    def get(self, kind: str, record_id: str) -> Any: ...
    def exists(self, kind: str, record_id: str) -> bool: ...
    def delete(self, kind: str, record_id: str) -> None: ...
    def ids(self, kind: str) -> list[str]: ...
    def exclusive(self) -> contextlib.AbstractContextManager[None]: ...
    @property
    def device_secret(self) -> bytes: ...


def _assurance_claim(method: Method, liveness: LivenessClaim) -> str:
    """The device's own assurance statement (a relying party's policy has the last word)."""
    if method is Method.FACE:
        return "strong" if liveness.passed else "moderate"
    if method is Method.SECURITY_KEY:
        return "strong"
    if method is Method.PIN:
        return "weaker"
    return "recovery"


@dataclass(frozen=True)
class UserVerification:
    """The outcome of a PIN / face / recovery / security-key flow, as credentials consume it.

    ``verified`` is the only thing that sets UP and UV; the rest is reported in the
    ``devicebio`` extension. ``model`` identifies the face model (None for other methods).
    """

    method: Method
    liveness: LivenessClaim
    model: str | None
    verified: bool

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "unknown verification method") from None
        if not isinstance(self.liveness, LivenessClaim):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "liveness must be a LivenessClaim")
        if type(self.verified) is not bool:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "verified must be a bool")
        self.extension()  # the claim must fit the wire schema now, not at signing time

    @property
    def assurance(self) -> str:
        return _assurance_claim(self.method, self.liveness)

    @protocol_errors()
    def extension(self, *, device_id: bytes | None = None) -> DevicebioExtension:
        return DevicebioExtension(
            method=self.method,
            liveness=self.liveness,
            model=self.model,
            assurance=self.assurance,
            device_id=device_id,
            sdk_version=_sdk_version(),
        )


def _sdk_version() -> str | None:
    package = sys.modules.get("devicebio")
    version = getattr(package, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("devicebio")
    except importlib.metadata.PackageNotFoundError:
        return None


def _bad(message: str) -> DeviceBioError:
    return DeviceBioError(Reason.INVALID_ARGUMENT, message)


def _check_rp_origin(rp_id: object, origin: object) -> None:
    if not isinstance(rp_id, str) or _RP_ID_RE.fullmatch(rp_id) is None:
        raise _bad("rp_id must be a lower-case host name")
    if not isinstance(origin, str) or not verify_rp_id(rp_id, origin):
        # What a browser refuses too: an origin may only use its own host or a registrable
        # parent of it as RP id. This is the phishing protection WebAuthn is built on.
        raise _bad("origin may not use this rp_id")


def _check_challenge(challenge: object) -> bytes:
    if not isinstance(challenge, bytes) or not (_CHALLENGE_MIN <= len(challenge) <= _CHALLENGE_MAX):
        raise _bad(f"challenge must be {_CHALLENGE_MIN}..{_CHALLENGE_MAX} bytes")
    return challenge


def _record_id(rp_id: str, user: str) -> str:
    # Vault ids are restricted ASCII; a hash also keeps user names out of any id listing.
    digest = hashlib.sha256(b"devicebio/credential/v1\x00" + f"{rp_id}\x00{user}".encode())
    return digest.hexdigest()[:40]


class Credentials:
    """WebAuthn credentials of one device profile, stored in ``vault``.

    Safe for threads and processes sharing one vault: the counter's read-increment-write is
    serialised so two concurrent authentications never sign the same counter value.
    """

    def __init__(self, vault: _Vault) -> None:
        self._vault = vault
        self._lock = threading.Lock()

    def device_id(self, rp_id: str) -> bytes:
        """The per-RP device identifier: unlinkable across RPs without the device secret."""
        mac = hmac.new(self._vault.device_secret, _DEVICE_ID_LABEL + rp_id.encode(), "sha256")
        return mac.digest()[:16]

    def register(
        self,
        *,
        rp_id: str,
        origin: str,
        challenge: bytes,
        user_name: str,
        user_handle: bytes | None = None,
        verification: UserVerification,
    ) -> Registration:
        """Create (or replace) the credential for ``(rp_id, user_name)``.

        The user must have been verified (``USER_NOT_VERIFIED`` otherwise): a credential is
        only ever bound to a verified user. Re-registering replaces the old key and id.
        """
        _check_rp_origin(rp_id, origin)
        _check_challenge(challenge)
        if not isinstance(user_name, str) or not 1 <= len(user_name) <= _MAX_USER_NAME:
            raise _bad(f"user_name must be 1..{_MAX_USER_NAME} characters")
        if user_handle is None:
            user_handle = nacl.utils.random(32)
        elif not isinstance(user_handle, bytes) or not 1 <= len(user_handle) <= 64:
            raise _bad("user_handle must be 1..64 bytes")
        if not isinstance(verification, UserVerification):
            raise _bad("verification must be a UserVerification")
        if not verification.verified:
            raise DeviceBioError(Reason.USER_NOT_VERIFIED, "registration needs a verified user")

        signing_key = nacl.signing.SigningKey.generate()
        credential_id = nacl.utils.random(_CREDENTIAL_ID_SIZE)
        device_id = self.device_id(rp_id)
        extension = verification.extension(device_id=device_id)
        auth_data = AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(),
            _F.UP | _F.UV | _F.AT | _F.ED,
            0,
            protocol.attested_credential_data(credential_id, bytes(signing_key.verify_key)),
            extension.to_extensions(),
        )
        client_data = CollectedClientData.create(
            type=CollectedClientData.TYPE.CREATE, challenge=challenge, origin=origin
        )
        signature = signing_key.sign(bytes(auth_data) + client_data.hash).signature
        attestation = AttestationObject.create(
            "packed", auth_data, {"alg": protocol.COSE_ALG_EDDSA, "sig": signature}
        )
        record: CredentialBody = {
            "v": CREDENTIAL_VERSION,
            "rp_id": rp_id,
            "user": user_name,
            "user_handle": user_handle,
            "credential_id": credential_id,
            "seed": bytes(signing_key),
            "counter": 0,
            "created_at": int(time.time()),
        }
        with self._lock:
            self._vault.put(KIND, _record_id(rp_id, user_name), record)
        return Registration(
            rp_id=rp_id,
            user=user_name,
            user_handle=user_handle,
            credential_id=credential_id,
            device_id=device_id,
            client_data_json=bytes(client_data),
            attestation_object=bytes(attestation),
        )

    def authenticate(
        self,
        *,
        rp_id: str,
        origin: str,
        challenge: bytes,
        verification: UserVerification,
        credential_id: bytes | None = None,
        payment: PaymentDetails | None = None,
        user: str | None = None,
    ) -> Assertion:
        """Sign an assertion for ``rp_id``.

        With ``payment`` it is a Secure Payment Confirmation assertion: clientDataJSON has
        type ``payment.get`` and carries ``payment`` as its ``payment`` member, so the
        signature covers the transaction. Its ``rpId`` must be ``rp_id``.

        UP and UV are set only when ``verification.verified``; an unverified attempt is still
        signed (so an RP can see and count it) but no conforming RP will accept it. Without
        ``credential_id`` the single credential for ``rp_id`` is used (``INVALID_ARGUMENT``
        when there are several, ``CREDENTIAL_NOT_FOUND`` when there is none). ``user``: only
        that user's credential may sign (a face verifies one enrolled user, and releases only
        the credential registered under that name).
        """
        _check_rp_origin(rp_id, origin)
        _check_challenge(challenge)
        if not isinstance(verification, UserVerification):
            raise _bad("verification must be a UserVerification")
        if credential_id is not None and not isinstance(credential_id, bytes):
            raise _bad("credential_id must be bytes or None")
        if user is not None and not isinstance(user, str):
            raise _bad("user must be a str or None")
        extension = verification.extension()
        flags = _F.ED | ((_F.UP | _F.UV) if verification.verified else _F(0))
        if payment is None:
            client_data = CollectedClientData.create(
                type=CollectedClientData.TYPE.GET, challenge=challenge, origin=origin
            )
        else:
            if not isinstance(payment, PaymentDetails):
                raise _bad("payment must be a PaymentDetails")
            if payment.rp_id != rp_id:
                # The credential signs for rp_id; a member naming another RP would be a lie.
                raise _bad("payment.rpId must be the rp_id that signs")
            with protocol_errors():
                raw = protocol.payment_client_data(
                    challenge=challenge, origin=origin, payment=payment
                )
            client_data = CollectedClientData(raw)
        # The vault's lock spans read-increment-write, so two processes sharing this vault
        # never sign the same counter value either.
        with self._lock, self._vault.exclusive():
            record_id, record = self._find(rp_id, credential_id, user)
            counter = record["counter"] + 1
            if counter > MAX_COUNTER:
                raise _bad("signature counter exhausted; register a new credential")
            record["counter"] = counter
            # Durable before any signature exists: a crash after this point skips a value,
            # it can never make the device sign the same counter twice.
            self._vault.put(KIND, record_id, record)
        auth_data = AuthenticatorData.create(
            hashlib.sha256(rp_id.encode()).digest(),
            flags,
            counter,
            extensions=extension.to_extensions(),
        )
        signature = (
            nacl.signing.SigningKey(record["seed"])
            .sign(bytes(auth_data) + client_data.hash)
            .signature
        )
        return Assertion(
            rp_id=rp_id,
            user=record["user"],
            user_handle=record["user_handle"],
            credential_id=record["credential_id"],
            sign_count=counter,
            client_data_json=bytes(client_data),
            authenticator_data=bytes(auth_data),
            signature=signature,
        )

    def _records(self) -> list[tuple[str, CredentialBody]]:
        return [
            (rid, check_credential(self._vault.get(KIND, rid))) for rid in self._vault.ids(KIND)
        ]

    def _find(
        self, rp_id: str, credential_id: bytes | None, user: str | None = None
    ) -> tuple[str, CredentialBody]:
        matches = [
            (rid, rec)
            for rid, rec in self._records()
            if rec["rp_id"] == rp_id
            and (user is None or rec["user"] == user)
            and (credential_id is None or hmac.compare_digest(rec["credential_id"], credential_id))
        ]
        if not matches:
            whose = "this RP" if user is None else "this user at this RP"
            raise DeviceBioError(Reason.CREDENTIAL_NOT_FOUND, f"no credential for {whose}")
        if len(matches) > 1:
            raise _bad("several credentials for this RP: pass credential_id")
        return matches[0]

    def list(self) -> list[CredentialInfo]:
        """Every credential on this device (no key material)."""
        return [
            CredentialInfo(
                rp_id=rec["rp_id"],
                user=rec["user"],
                user_handle=rec["user_handle"],
                credential_id=rec["credential_id"],
                sign_count=rec["counter"],
                created_at=rec["created_at"],
            )
            for _, rec in self._records()
        ]

    def remove(self, rp_id: str, user: str) -> None:
        """Delete the credential (and its key) for ``(rp_id, user)``."""
        if not isinstance(rp_id, str) or not isinstance(user, str):
            raise _bad("rp_id and user must be strings")
        record_id = _record_id(rp_id, user)
        with self._lock:
            if not self._vault.exists(KIND, record_id):
                raise DeviceBioError(Reason.CREDENTIAL_NOT_FOUND, "no such credential")
            self._vault.delete(KIND, record_id)
