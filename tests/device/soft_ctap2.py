"""A software CTAP2 authenticator: a TEST DOUBLE standing in for a USB security key.

Like a fake camera, it replaces the one piece of hardware a test machine does not have.
Everything above it runs for real: python-fido2's ``Fido2Client`` and ``Ctap2`` (with their
strict canonical-CBOR checks), the client-data collector, and devicebio's
``SecurityKeyFallback`` with ``Fido2Server``. It is NOT an authenticator to use for anything:
its "secure element" is a Python attribute, and it lives under ``tests/`` only.

It answers ``CtapDevice.call(CTAPHID.CBOR, ...)`` for a CTAP 2.0 subset:

- authenticatorGetInfo
- authenticatorMakeCredential: ES256 (-7) or EdDSA (-8) keys; non-resident credentials whose
  id wraps the private key (AES-GCM under this key's master secret, bound to the RP id hash),
  as real roaming keys do, so a different key cannot use them; attestation ``"packed"``
  (self attestation) or ``"none"``; the exclude list is honoured.
- authenticatorGetAssertion with an allow list and the ``up`` / ``uv`` options.
- authenticatorReset (a new master secret: every credential is gone).

Switches for the unhappy paths:

- ``touch``: ``"touch"`` (the user touches), ``"deny"`` (CTAP2_ERR_OPERATION_DENIED) or
  ``"ignore"`` (nobody touches: waits for the client to cancel, then KEEPALIVE_CANCEL, or
  USER_ACTION_TIMEOUT after ``ignore_wait_s``).
- ``uv``: whether the key has built-in user verification (advertised as option ``uv``).
- ``counter``: False makes the key report a signature counter of 0 forever (allowed by
  WebAuthn for keys without a counter).
- :meth:`clone` copies the secrets and the counter as they are now: a cloned key that later
  signs replays counter values the original already used.
- ``forge_attestation``: the packed attestation signature covers other bytes than it should.
- ``report_up``: False makes a faulty key leave the UP flag out of its assertions.
- ``unplugged``: the transport fails with ``OSError`` as a pulled-out HID device does.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fido2 import cbor
from fido2.cose import ES256, CoseKey, EdDSA
from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID
from fido2.webauthn import Aaguid, AttestedCredentialData, AuthenticatorData

ERR = CtapError.ERR
F = AuthenticatorData.FLAG

# A made-up AAGUID ("soft-ctap2-double" in spirit) so nothing mistakes it for a real model.
SOFT_AAGUID = Aaguid(bytes.fromhex("50f7c7a2000000000000000000d0b1e5"))
SUPPORTED_ALGS = (ES256.ALGORITHM, EdDSA.ALGORITHM)
_CRED_VERSION = 1
_NONCE = 12
_MAX_CRED_ID = 128

_MAKE_CREDENTIAL, _GET_ASSERTION, _GET_INFO, _RESET = 0x01, 0x02, 0x04, 0x07


class SoftCtap2Key(CtapDevice):
    """A software CTAP2 security key for tests (see the module docstring)."""

    def __init__(
        self,
        *,
        algorithms: tuple[int, ...] = SUPPORTED_ALGS,
        attestation: str = "packed",
        uv: bool = False,
        touch: str = "touch",
        counter: bool = True,
        ignore_wait_s: float = 5.0,
    ) -> None:
        if not algorithms or any(a not in SUPPORTED_ALGS for a in algorithms):
            raise ValueError(f"algorithms must be drawn from {SUPPORTED_ALGS}")
        if attestation not in ("packed", "none"):
            raise ValueError("attestation is 'packed' or 'none'")
        self.algorithms = algorithms
        self.attestation = attestation
        self.uv = uv
        self.touch = touch
        self.counter_enabled = counter
        self.ignore_wait_s = ignore_wait_s
        self.cancelled = 0
        self.unplugged = False
        self.forge_attestation = False
        self.report_up = True
        self.sign_count = 0
        self.touches = 0  # how many times the user was asked for presence
        self._master = AESGCM.generate_key(bit_length=256)
        self._lock = threading.Lock()

    # ---- CtapDevice ------------------------------------------------------------------------

    @property
    def capabilities(self) -> int:
        return int(CAPABILITY.CBOR | CAPABILITY.NMSG | CAPABILITY.WINK)

    @classmethod
    def list_devices(cls) -> Iterator[CtapDevice]:
        return iter(())  # a double is never "discovered"; tests hand it over explicitly

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: threading.Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        if self.unplugged:
            raise OSError("soft key unplugged")
        if cmd == CTAPHID.PING:
            return bytes(data)
        if cmd == CTAPHID.WINK:
            return b""
        if cmd != CTAPHID.CBOR:
            raise CtapError(ERR.INVALID_COMMAND)
        if not data:
            return bytes([ERR.INVALID_LENGTH])
        with self._lock:
            try:
                body = self._dispatch(data[0], bytes(data[1:]), event, on_keepalive)
            except CtapError as exc:
                return bytes([int(exc.code)])
        return b"\x00" + (cbor.encode(body) if body is not None else b"")

    # ---- test conveniences -----------------------------------------------------------------

    def clone(self) -> SoftCtap2Key:
        """A copy of this key's secrets and counter *as they are now* (a cloned key)."""
        twin = SoftCtap2Key(
            algorithms=self.algorithms,
            attestation=self.attestation,
            uv=self.uv,
            touch=self.touch,
            counter=self.counter_enabled,
            ignore_wait_s=self.ignore_wait_s,
        )
        twin._master = self._master
        twin.sign_count = self.sign_count
        return twin

    # ---- commands --------------------------------------------------------------------------

    def _dispatch(
        self,
        command: int,
        payload: bytes,
        event: threading.Event | None,
        on_keepalive: Callable[[STATUS], None] | None,
    ) -> Mapping[int, Any] | None:
        if command == _GET_INFO:
            return self._get_info()
        params = _decode_params(payload)
        if command == _MAKE_CREDENTIAL:
            return self._make_credential(params, event, on_keepalive)
        if command == _GET_ASSERTION:
            return self._get_assertion(params, event, on_keepalive)
        if command == _RESET:
            self._user_presence(event, on_keepalive)
            self._master = AESGCM.generate_key(bit_length=256)
            self.sign_count = 0
            return None
        raise CtapError(ERR.INVALID_COMMAND)

    def _get_info(self) -> Mapping[int, Any]:
        options: dict[str, bool] = {"rk": False, "up": True, "plat": False}
        if self.uv:
            options["uv"] = True  # absent (not False) when there is no built-in UV at all
        info: dict[int, Any] = {
            1: ["FIDO_2_0"],
            3: bytes(SOFT_AAGUID),
            4: options,
            5: 1200,
            7: 8,
            8: _MAX_CRED_ID,
            9: ["usb"],
            10: [{"alg": alg, "type": "public-key"} for alg in self.algorithms],
        }
        if self.uv:
            # python-fido2 wants a PIN/UV protocol listed before it uses built-in UV, as real
            # CTAP 2.0 keys with a fingerprint reader list one.
            info[6] = [1]
        return info

    def _make_credential(
        self,
        params: Mapping[int, Any],
        event: threading.Event | None,
        on_keepalive: Callable[[STATUS], None] | None,
    ) -> Mapping[int, Any]:
        client_data_hash = _required(params, 1, bytes)
        rp = _required(params, 2, dict)
        _required(params, 3, dict)  # user: a non-resident key does not keep it
        key_params = _required(params, 4, list)
        rp_id = rp.get("id")
        if not isinstance(rp_id, str) or len(client_data_hash) != 32:
            raise CtapError(ERR.INVALID_PARAMETER)
        options = self._options(params.get(7), allow_up=False)
        if 8 in params:  # pinUvAuthParam: this key has no clientPin
            self._user_presence(event, on_keepalive)
            raise CtapError(ERR.PIN_NOT_SET)
        wanted = [
            p.get("alg")
            for p in key_params
            if isinstance(p, dict) and p.get("type") == "public-key"
        ]
        alg = next((a for a in wanted if a in self.algorithms), None)
        if alg is None:
            raise CtapError(ERR.UNSUPPORTED_ALGORITHM)
        rp_id_hash = hashlib.sha256(rp_id.encode()).digest()
        excluded = any(
            self._unwrap(d.get("id"), rp_id_hash) is not None for d in _descriptors(params.get(5))
        )
        self._user_presence(event, on_keepalive)
        if excluded:
            raise CtapError(ERR.CREDENTIAL_EXCLUDED)

        private = _new_private_key(alg)
        credential_id = self._wrap(alg, private, rp_id_hash)
        cose = _cose_public_key(alg, private)
        flags = F.UP | F.AT | (F.UV if options.get("uv") else F(0))
        auth_data = AuthenticatorData.create(
            rp_id_hash,
            flags,
            self._next_counter(),
            AttestedCredentialData.create(SOFT_AAGUID, credential_id, cose),
        )
        if self.attestation == "packed":
            signed = bytes(auth_data) + client_data_hash
            if self.forge_attestation:
                signed = bytes(auth_data) + bytes(32)
            signature = _sign(private, signed)
            statement: dict[str, Any] = {"alg": alg, "sig": signature}
        else:
            statement = {}
        return {1: self.attestation, 2: bytes(auth_data), 3: statement}

    def _get_assertion(
        self,
        params: Mapping[int, Any],
        event: threading.Event | None,
        on_keepalive: Callable[[STATUS], None] | None,
    ) -> Mapping[int, Any]:
        rp_id = _required(params, 1, str)
        client_data_hash = _required(params, 2, bytes)
        if len(client_data_hash) != 32:
            raise CtapError(ERR.INVALID_PARAMETER)
        options = self._options(params.get(5), allow_up=True)
        if 6 in params:
            self._user_presence(event, on_keepalive)
            raise CtapError(ERR.PIN_NOT_SET)
        rp_id_hash = hashlib.sha256(rp_id.encode()).digest()
        found: tuple[bytes, int, Any] | None = None
        for descriptor in _descriptors(params.get(3)):
            unwrapped = self._unwrap(descriptor.get("id"), rp_id_hash)
            if unwrapped is not None:
                found = (descriptor["id"], *unwrapped)
                break
        up = options.get("up", True)
        if up:
            # Presence comes first even when nothing matches, so a silent probe cannot tell
            # which RPs a key is registered with.
            self._user_presence(event, on_keepalive)
        if found is None:
            raise CtapError(ERR.NO_CREDENTIALS)
        credential_id, _alg, private = found
        flags = (F.UP if up and self.report_up else F(0)) | (F.UV if options.get("uv") else F(0))
        auth_data = AuthenticatorData.create(rp_id_hash, flags, self._next_counter())
        signature = _sign(private, bytes(auth_data) + client_data_hash)
        return {
            1: {"id": credential_id, "type": "public-key"},
            2: bytes(auth_data),
            3: signature,
        }

    # ---- helpers ---------------------------------------------------------------------------

    def _options(self, raw: object, *, allow_up: bool) -> dict[str, bool]:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in raw.items()
        ):
            raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
        if raw.get("rk"):
            raise CtapError(ERR.UNSUPPORTED_OPTION)
        if "up" in raw and not allow_up:
            raise CtapError(ERR.INVALID_OPTION)
        if raw.get("uv") and not self.uv:
            raise CtapError(ERR.UNSUPPORTED_OPTION)
        return dict(raw)

    def _user_presence(
        self, event: threading.Event | None, on_keepalive: Callable[[STATUS], None] | None
    ) -> None:
        self.touches += 1
        if on_keepalive is not None:
            on_keepalive(STATUS.UPNEEDED)
        if self.touch == "touch":
            return
        if self.touch == "deny":
            raise CtapError(ERR.OPERATION_DENIED)
        waiter = event or threading.Event()
        if waiter.wait(self.ignore_wait_s):
            self.cancelled += 1  # what a test checks instead of timing the wait
            raise CtapError(ERR.KEEPALIVE_CANCEL)
        raise CtapError(ERR.USER_ACTION_TIMEOUT)

    def _next_counter(self) -> int:
        if not self.counter_enabled:
            return 0
        self.sign_count += 1
        return self.sign_count

    def _wrap(self, alg: int, private: Any, rp_id_hash: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self._master).encrypt(
            nonce, struct.pack(">h", alg) + _private_bytes(private), rp_id_hash
        )
        return bytes([_CRED_VERSION]) + nonce + sealed

    def _unwrap(self, credential_id: object, rp_id_hash: bytes) -> tuple[int, Any] | None:
        if not isinstance(credential_id, bytes) or len(credential_id) < 1 + _NONCE + 16:
            return None
        if credential_id[0] != _CRED_VERSION:
            return None
        nonce, sealed = credential_id[1 : 1 + _NONCE], credential_id[1 + _NONCE :]
        try:
            plain = AESGCM(self._master).decrypt(nonce, sealed, rp_id_hash)
        except InvalidTag:
            return None  # another key's credential, or another RP's
        (alg,) = struct.unpack(">h", plain[:2])
        return alg, _load_private_key(alg, plain[2:])


def _decode_params(payload: bytes) -> Mapping[int, Any]:
    try:
        params = cbor.decode(payload) if payload else {}
    except Exception:
        raise CtapError(ERR.INVALID_CBOR) from None
    if not isinstance(params, dict) or not all(isinstance(k, int) for k in params):
        raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
    return params


def _required(params: Mapping[int, Any], key: int, kind: type) -> Any:
    if key not in params:
        raise CtapError(ERR.MISSING_PARAMETER)
    if not isinstance(params[key], kind):
        raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
    return params[key]


def _descriptors(raw: object) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(d, dict) for d in raw):
        raise CtapError(ERR.CBOR_UNEXPECTED_TYPE)
    return [d for d in raw if d.get("type") == "public-key"]


def _new_private_key(alg: int) -> Any:
    if alg == ES256.ALGORITHM:
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def _private_bytes(private: Any) -> bytes:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.private_numbers().private_value.to_bytes(32, "big")
    from cryptography.hazmat.primitives import serialization

    return private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def _load_private_key(alg: int, raw: bytes) -> Any:
    if alg == ES256.ALGORITHM:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.from_private_bytes(raw)


def _cose_public_key(alg: int, private: Any) -> CoseKey:
    cls = ES256 if alg == ES256.ALGORITHM else EdDSA
    return cls.from_cryptography_key(private.public_key())


def _sign(private: Any, message: bytes) -> bytes:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.sign(message, ec.ECDSA(hashes.SHA256()))
    return bytes(private.sign(message))
