"""The one place where devicebio's bytes on the wire are defined.

Both packages import this module: the device SDK to *build* registrations and assertions,
the verifier to *parse* them. It therefore imports only the standard library, cbor2, fido2
and PyNaCl — never numpy, OpenCV or onnxruntime.

Everything here speaks standard WebAuthn, built on python-fido2's data classes
(:class:`~fido2.webauthn.AuthenticatorData`, :class:`~fido2.webauthn.AttestationObject`,
:class:`~fido2.webauthn.CollectedClientData`, :mod:`fido2.cose`), so the exact signed bytes
are kept and never re-encoded before a signature check. What devicebio adds is one
authenticator extension, ``devicebio``, that says *how* the user was verified.

Parsers are strict: every malformed input raises
``DeviceBioError(Reason.MALFORMED_DATA)`` and nothing else (the verifier translates that to
``VerifierError(Reason.MALFORMED)`` at its boundary). Binary CBOR must be in the CTAP2
canonical form that python-fido2 writes; a decode/re-encode round trip that does not give
back the received bytes is refused, which also rejects duplicate map keys, indefinite
lengths, floats, tags, ``null`` and truncated strings.

The ``devicebio`` extension (authenticator extension output, inside authenticatorData)::

    devicebio-ext = {
      "v": 1,                      ; format version
      "m": method,                 ; how the user was verified
      "l": liveness,
      ? "md": tstr .size (1..128), ; model identifier (e.g. name@sha256 prefix)
      "a": assurance,              ; the device's own assurance class (a claim only)
      ? "d": bstr .size 16,        ; per-RP device id, registration only
      ? "s": tstr .size (1..64),   ; SDK version, for revocation by version
    }
    method    = "face" / "pin" / "recovery" / "security-key"
    liveness  = {
      "k": tstr,                   ; kind: "none", "active-challenge", ... ([a-z0-9-]{1,32})
      "p": bool,                   ; passed; always false when kind is "none"
      "f": uint,                   ; frames examined (<= 100000)
      ? "h": bstr .size (16..64),  ; hash of the challenge-derived prompt sequence
    }
    assurance = tstr               ; [a-z0-9-]{1,32}

Never a score, a template or an image: the schema has no place for one.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import json
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, ParamSpec, TypeVar

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

from devicebio.errors import DeviceBioError, Reason

__all__ = [
    "COSE_ALG_EDDSA",
    "DEVICEBIO_AAGUID",
    "EXTENSION_ID",
    "LIVENESS_KIND",
    "AuthenticationResponseData",
    "DevicebioExtension",
    "LivenessClaim",
    "Method",
    "Prompt",
    "PromptStep",
    "RegistrationResponseData",
    "attested_credential_data",
    "authentication_to_json",
    "b64url_decode",
    "b64url_encode",
    "devicebio_extension_of",
    "ed25519_cose_key",
    "ed25519_public_key_from_cose",
    "liveness_plan",
    "liveness_sequence_hash",
    "parse_attestation_object",
    "parse_authentication_json",
    "parse_authenticator_data",
    "parse_client_data",
    "parse_registration_json",
    "registration_to_json",
]

EXTENSION_ID = "devicebio"
COSE_ALG_EDDSA = -8
# A fixed AAGUID naming "a devicebio software authenticator". Self-attestation proves nothing
# about the device, so this is a label for RP dashboards, not a trust anchor.
DEVICEBIO_AAGUID = Aaguid(bytes.fromhex("6465766963656269f0a1b2c3d4e5f601"))

# Bounds that keep hostile inputs cheap to refuse.
MAX_JSON_BYTES = 64 * 1024
MAX_CREDENTIAL_ID = 1023  # WebAuthn §7.1: credential ids longer than 1023 bytes are refused
MAX_USER_HANDLE = 64  # WebAuthn: user handles are at most 64 bytes
_MAX_B64_FIELD = 4 * MAX_JSON_BYTES // 3 + 4  # a JSON member never decodes past the JSON cap

# SubjectPublicKeyInfo DER prefix of an Ed25519 key (RFC 8410), used for the L3 `publicKey`.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _malformed(message: str) -> NoReturn:
    raise DeviceBioError(Reason.MALFORMED_DATA, message)


def _strict(func: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn any stray exception of a parser into the one typed error.

    python-fido2 and the json module raise ValueError, KeyError, IndexError, struct.error,
    UnicodeDecodeError, RecursionError ... on hostile input; callers must only ever see
    DeviceBioError.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return func(*args, **kwargs)
        except DeviceBioError:
            raise
        except Exception as exc:
            raise DeviceBioError(
                Reason.MALFORMED_DATA, f"{func.__name__}: {type(exc).__name__}"
            ) from exc

    return wrapper


# --------------------------------------------------------------------------- base64url

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """base64url without padding, as WebAuthn's JSON forms use it."""
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url: URL alphabet only, no padding, canonical trailing bits.

    Refusing non-canonical encodings means one byte string has exactly one text form, so
    ``id`` and ``rawId`` can be compared as text and challenges cannot be smuggled in
    look-alike spellings.
    """
    if not isinstance(text, str):
        _malformed("base64url value must be a string")
    if len(text) % 4 == 1 or _B64URL_RE.fullmatch(text) is None:
        _malformed("not canonical unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        _malformed("not canonical unpadded base64url")
    if b64url_encode(data) != text:
        _malformed("not canonical unpadded base64url")
    return data


# --------------------------------------------------------------------------- extension


class Method(enum.StrEnum):
    """How the device verified the user."""

    FACE = "face"
    PIN = "pin"
    RECOVERY = "recovery"
    SECURITY_KEY = "security-key"


_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_PRINTABLE_RE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")
_MAX_FRAMES = 100_000


def _invalid(message: str) -> NoReturn:
    raise DeviceBioError(Reason.INVALID_ARGUMENT, message)


def _reworded(exc: DeviceBioError) -> str:
    # A constructor's INVALID_ARGUMENT becomes MALFORMED_DATA when the value came off the wire.
    return str(exc).removeprefix(f"{exc.reason.value}: ")


@dataclass(frozen=True)
class LivenessClaim:
    """What the device says about liveness. A claim, signed, but still only a claim.

    ``kind`` names the check ("none", "active-challenge", ...); ``passed`` is always False
    for "none"; ``sequence_hash`` binds the claim to the challenge-derived prompt sequence;
    ``frames`` is how many frames were examined.
    """

    kind: str
    passed: bool
    sequence_hash: bytes | None = None
    frames: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or _TOKEN_RE.fullmatch(self.kind) is None:
            _invalid("liveness kind must match [a-z0-9][a-z0-9-]{0,31}")
        if type(self.passed) is not bool:
            _invalid("liveness passed must be a bool")
        if self.kind == "none" and self.passed:
            _invalid('liveness kind "none" cannot have passed')
        if self.sequence_hash is not None and (
            type(self.sequence_hash) is not bytes or not 16 <= len(self.sequence_hash) <= 64
        ):
            _invalid("liveness sequence_hash must be 16..64 bytes")
        if type(self.frames) is not int or not 0 <= self.frames <= _MAX_FRAMES:
            _invalid(f"liveness frames must be an int in 0..{_MAX_FRAMES}")

    @classmethod
    def none(cls) -> LivenessClaim:
        """No liveness check was run (PIN, recovery code, security key)."""
        return cls(kind="none", passed=False)

    def to_cbor_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"k": self.kind, "p": self.passed, "f": self.frames}
        if self.sequence_hash is not None:
            obj["h"] = self.sequence_hash
        return obj

    @classmethod
    def from_cbor_obj(cls, obj: object) -> LivenessClaim:
        """Strict: exactly the documented keys and types, else MALFORMED_DATA."""
        fields_ = _exact_map(obj, required={"k", "p", "f"}, optional={"h"}, what="liveness")
        try:
            return cls(
                kind=_typed(fields_["k"], str, "liveness kind"),
                passed=_typed(fields_["p"], bool, "liveness passed"),
                frames=_typed(fields_["f"], int, "liveness frames"),
                sequence_hash=(
                    _typed(fields_["h"], bytes, "liveness hash") if "h" in fields_ else None
                ),
            )
        except DeviceBioError as exc:
            raise DeviceBioError(Reason.MALFORMED_DATA, _reworded(exc)) from None


@dataclass(frozen=True, kw_only=True)
class DevicebioExtension:
    """The ``devicebio`` authenticator extension: how the user was verified.

    ``assurance`` is the device's own statement; a relying party's policy decides what a
    method is worth and need not trust it. ``device_id`` is per-RP (unlinkable across RPs)
    and only sent at registration. ``sdk_version`` lets an RP revoke a faulty SDK release.
    """

    version: int = 1
    method: Method
    liveness: LivenessClaim
    model: str | None = None
    assurance: str
    device_id: bytes | None = None
    sdk_version: str | None = None

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version != 1:
            _invalid("only devicebio extension version 1 exists")
        if not isinstance(self.method, Method):
            try:
                object.__setattr__(self, "method", Method(self.method))
            except ValueError:
                _invalid("unknown method")
        if not isinstance(self.liveness, LivenessClaim):
            _invalid("liveness must be a LivenessClaim")
        if self.method is not Method.FACE and self.liveness.kind != "none":
            _invalid("only the face method carries a liveness check")
        if self.model is not None and (
            not isinstance(self.model, str)
            or len(self.model) > 128
            or _PRINTABLE_RE.fullmatch(self.model) is None
        ):
            _invalid("model must be 1..128 printable ASCII characters")
        if not isinstance(self.assurance, str) or _TOKEN_RE.fullmatch(self.assurance) is None:
            _invalid("assurance must match [a-z0-9][a-z0-9-]{0,31}")
        if self.device_id is not None and (
            type(self.device_id) is not bytes or len(self.device_id) != 16
        ):
            _invalid("device_id must be 16 bytes")
        if self.sdk_version is not None and (
            not isinstance(self.sdk_version, str)
            or len(self.sdk_version) > 64
            or _PRINTABLE_RE.fullmatch(self.sdk_version) is None
        ):
            _invalid("sdk_version must be 1..64 printable ASCII characters")

    def to_cbor_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "v": self.version,
            "m": self.method.value,
            "l": self.liveness.to_cbor_obj(),
            "a": self.assurance,
        }
        if self.model is not None:
            obj["md"] = self.model
        if self.device_id is not None:
            obj["d"] = self.device_id
        if self.sdk_version is not None:
            obj["s"] = self.sdk_version
        return obj

    @classmethod
    def from_cbor_obj(cls, obj: object) -> DevicebioExtension:
        """Strict: unknown, missing or mistyped fields -> DeviceBioError(MALFORMED_DATA)."""
        f = _exact_map(
            obj, required={"v", "m", "l", "a"}, optional={"md", "d", "s"}, what="devicebio"
        )
        version = _typed(f["v"], int, "version")
        if version != 1:
            _malformed(f"unsupported devicebio extension version {version}")
        method_text = _typed(f["m"], str, "method")
        try:
            method = Method(method_text)
        except ValueError:
            _malformed("unknown method")
        liveness = LivenessClaim.from_cbor_obj(f["l"])
        try:
            return cls(
                version=version,
                method=method,
                liveness=liveness,
                model=_typed(f["md"], str, "model") if "md" in f else None,
                assurance=_typed(f["a"], str, "assurance"),
                device_id=_typed(f["d"], bytes, "device_id") if "d" in f else None,
                sdk_version=_typed(f["s"], str, "sdk_version") if "s" in f else None,
            )
        except DeviceBioError as exc:
            raise DeviceBioError(Reason.MALFORMED_DATA, _reworded(exc)) from None

    def to_extensions(self) -> dict[str, Any]:
        """The authenticator-extension map to put in authenticatorData."""
        return {EXTENSION_ID: self.to_cbor_obj()}


# --------------------------------------------------------------------------- liveness plan
#
# The device derives its prompt sequence from the RP's challenge and the verifier recomputes
# it, so both sides must agree bit for bit: integers (milliseconds) only, stdlib only.

LIVENESS_KIND = "active-challenge"
_PLAN_DOMAIN = b"devicebio/liveness/v1\0"
_HASH_DOMAIN = b"devicebio/liveness-sequence/v1\0"
# Delays are drawn in [0.4, 1.6] s in 10 ms steps: a recording made for another challenge
# cannot line its responses up with a fresh plan's prompts.
_DELAY_MIN_MS = 400
_DELAY_STEPS = 201  # delays 0.4-2.4 s: a recording rarely lines up with a fresh plan
_WINDOW_MS = 3000
_MAX_STEPS = 16
_MAX_CHALLENGE = 1024


class Prompt(enum.StrEnum):
    """What the user is asked to do. Directions are the SUBJECT's own (see
    :func:`devicebio.vision.mesh.head_pose`): turn_left is positive yaw in an unmirrored frame,
    look_up is positive pitch, both relative to the subject's own neutral pose."""

    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    LOOK_UP = "look_up"
    BLINK = "blink"


_PROMPTS = tuple(Prompt)


@dataclass(frozen=True)
class PromptStep:
    """One prompt: shown ``delay_s`` after the previous step completed (or after the
    session's neutral baseline), answered within ``window_s`` of being shown."""

    prompt: Prompt
    delay_s: float
    window_s: float


def _check_challenge(challenge: object) -> bytes:
    if not isinstance(challenge, bytes | bytearray) or not 1 <= len(challenge) <= _MAX_CHALLENGE:
        _invalid(f"challenge must be 1..{_MAX_CHALLENGE} bytes")
    return bytes(challenge)


def liveness_plan(challenge: bytes, *, steps: int = 5) -> tuple[PromptStep, ...]:
    """The prompt sequence for ``challenge``: deterministic, so the verifier recomputes it.

    Five steps by default: with four, a fresh plan repeated a recorded session's prompt order
    about 1% of the time (measured), which is the whole of a replay attack's chance; five
    steps and delays spread over 2 s make that both rarer and a timing mismatch likelier.

    Drawn from SHA-256("devicebio/liveness/v1\\0" || challenge) (expanded by counter); no
    prompt twice in a row, and at least one head turn (the flat-surface parallax test needs
    one) whenever ``steps`` >= 2.
    """
    data = _check_challenge(challenge)
    if type(steps) is not int or not 1 <= steps <= _MAX_STEPS:
        _invalid(f"steps must be an int in 1..{_MAX_STEPS}")
    seed = hashlib.sha256(_PLAN_DOMAIN + data).digest()
    for attempt in range(256):
        stream = hashlib.sha256(seed + struct.pack(">I", attempt)).digest()
        stream += hashlib.sha256(stream).digest()
        plan: list[PromptStep] = []
        previous: Prompt | None = None
        for i in range(steps):
            pick, delay = stream[2 * i], stream[2 * i + 1] * 256 + stream[32 + i]
            choices = [p for p in _PROMPTS if p is not previous]
            prompt = choices[pick % len(choices)]
            delay_ms = _DELAY_MIN_MS + delay % _DELAY_STEPS * 10
            plan.append(PromptStep(prompt, delay_ms / 1000.0, _WINDOW_MS / 1000.0))
            previous = prompt
        turns = {Prompt.TURN_LEFT, Prompt.TURN_RIGHT}
        if steps < 2 or any(s.prompt in turns for s in plan):
            return tuple(plan)
    raise AssertionError("unreachable: 256 draws without a head turn")  # pragma: no cover


def liveness_sequence_hash(challenge: bytes, plan: Sequence[PromptStep]) -> bytes:
    """32-byte SHA-256 over a canonical encoding of the challenge and the plan.

    Encoding: domain || u16 len(challenge) || challenge || u8 n || n x (u8 len(prompt) ||
    prompt ASCII || u32 delay_ms || u32 window_ms), big-endian; times rounded to milliseconds.
    """
    data = _check_challenge(challenge)
    if not isinstance(plan, Sequence) or not 1 <= len(plan) <= _MAX_STEPS:
        _invalid(f"plan must be a sequence of 1..{_MAX_STEPS} PromptStep")
    out = bytearray(_HASH_DOMAIN)
    out += struct.pack(">H", len(data)) + data + struct.pack(">B", len(plan))
    for step in plan:
        if not isinstance(step, PromptStep):
            _invalid("plan must hold PromptStep")
        name = Prompt(step.prompt).value.encode("ascii")
        times = [round(float(t) * 1000.0) for t in (step.delay_s, step.window_s)]
        if not all(0 <= t < 2**32 for t in times):
            _invalid("prompt times out of range")
        out += struct.pack(">B", len(name)) + name + struct.pack(">II", *times)
    return hashlib.sha256(bytes(out)).digest()


def _exact_map(obj: object, *, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        _malformed(f"{what} must be a map")
    keys = set(obj)
    if not all(isinstance(k, str) for k in keys):
        _malformed(f"{what} keys must be text")
    if missing := required - keys:
        _malformed(f"{what} lacks {sorted(missing)}")
    if unknown := keys - required - optional:
        _malformed(f"{what} has unknown fields {sorted(unknown)}")
    return obj


def _typed(value: object, kind: type[_T], what: str) -> _T:
    # `type(...) is` on purpose: bool is an int subclass, and a bytes subclass such as
    # fido2's Aaguid must not pass for plain bytes in a strict schema.
    if kind is bytes:
        ok = isinstance(value, bytes)
    elif kind is int:
        ok = type(value) is int
    else:
        ok = type(value) is kind
    if not ok:
        _malformed(f"{what} must be {kind.__name__}")
    return value  # type: ignore[return-value]


@_strict
def devicebio_extension_of(auth_data: AuthenticatorData) -> DevicebioExtension | None:
    """The ``devicebio`` extension in parsed authenticator data, or None when absent.

    Present-but-invalid raises MALFORMED_DATA; other extensions are left to the caller.
    """
    extensions = auth_data.extensions
    if not auth_data.has_extension_data() or extensions is None:
        return None
    if EXTENSION_ID not in extensions:
        return None
    return DevicebioExtension.from_cbor_obj(extensions[EXTENSION_ID])


# --------------------------------------------------------------------------- COSE keys


def ed25519_cose_key(public_key: bytes) -> EdDSA:
    """COSE_Key (OKP, crv Ed25519, alg EdDSA -8) for a 32-byte Ed25519 public key."""
    if type(public_key) is not bytes or len(public_key) != 32:
        _invalid("an Ed25519 public key is 32 bytes")
    return EdDSA({1: 1, 3: COSE_ALG_EDDSA, -1: 6, -2: public_key})


@_strict
def ed25519_public_key_from_cose(key: bytes | Mapping[int, Any]) -> bytes:
    """The raw 32-byte key of a COSE_Key that is exactly OKP/Ed25519/EdDSA, else MALFORMED_DATA.

    Accepts the CBOR bytes (canonical only) or an already-decoded map.
    """
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
        obj = cbor.decode(raw)
        if cbor.encode(obj) != raw:
            _malformed("COSE key is not canonical CBOR")
    else:
        obj = key
    if not isinstance(obj, Mapping) or set(obj) != {1, 3, -1, -2}:
        _malformed("COSE key must have exactly kty, alg, crv and x")
    header = (obj[1], obj[3], obj[-1])  # kty, alg, crv
    if any(type(v) is not int for v in header) or header != (1, COSE_ALG_EDDSA, 6):
        _malformed("COSE key is not OKP/Ed25519/EdDSA")
    x = obj[-2]
    if not isinstance(x, bytes) or len(x) != 32:
        _malformed("Ed25519 x must be 32 bytes")
    return bytes(x)


def _ed25519_spki(public_key: bytes) -> bytes:
    return _ED25519_SPKI_PREFIX + public_key


# --------------------------------------------------------------------------- binary parsers


def _as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        _malformed(f"{what} must be bytes")
    return bytes(data)


def _text_keyed(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(type(k) is str and _text_keyed(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_text_keyed(v) for v in obj)
    return True


def _canonical_cbor(obj: Any) -> bytes:
    """fido2's canonical encoding of what fido2's decoder returned, faster.

    fido2 sorts map keys by first byte, then length, then bytes; cbor2's canonical order is
    length first. They agree when every key is text (a property test checks this), which is
    what devicebio's extensions use, and cbor2's C encoder is about 3x faster. Any other key
    type keeps fido2's own encoder, so nothing fido2 refused becomes acceptable.
    """
    if _text_keyed(obj):
        return cbor2.dumps(obj, canonical=True)
    return cbor.encode(obj)


@_strict
def parse_authenticator_data(data: bytes) -> AuthenticatorData:
    """Strictly parse authenticatorData; the returned object *is* the received bytes."""
    raw = _as_bytes(data, "authenticatorData")
    if len(raw) < 37:
        _malformed("authenticatorData shorter than 37 bytes")
    parsed = AuthenticatorData(raw)
    # fido2's decoder is lenient (null reads as False, short strings are cut); a canonical
    # re-encode that differs from the input is how that leniency is caught.
    if parsed.credential_data is None:
        # Assertions: the 37-byte header is the input's own, so only the extensions can
        # differ; comparing their re-encoding spares rebuilding and re-parsing the whole.
        tail = b"" if parsed.extensions is None else _canonical_cbor(parsed.extensions)
        canonical = raw[37:] == tail
    else:
        again = AuthenticatorData.create(
            parsed.rp_id_hash,
            parsed.flags,
            parsed.counter,
            bytes(parsed.credential_data),
            parsed.extensions,
        )
        canonical = bytes(again) == raw
    if not canonical:
        _malformed("authenticatorData is not canonical")
    if parsed.has_extension_data() and not isinstance(parsed.extensions, dict):
        _malformed("authenticator extensions must be a map")
    if parsed.credential_data is not None:
        cid = parsed.credential_data.credential_id
        if not 1 <= len(cid) <= MAX_CREDENTIAL_ID:
            _malformed("credential id length out of range")
    return parsed


@_strict
def parse_attestation_object(data: bytes) -> AttestationObject:
    """Strictly parse an attestation object (canonical CBOR map of fmt, attStmt, authData)."""
    raw = _as_bytes(data, "attestationObject")
    obj = cbor.decode(raw)
    if not isinstance(obj, dict) or set(obj) != {"fmt", "attStmt", "authData"}:
        _malformed("attestationObject must map exactly fmt, attStmt and authData")
    if not isinstance(obj["fmt"], str) or not isinstance(obj["authData"], bytes):
        _malformed("attestationObject fmt/authData mistyped")
    stmt = obj["attStmt"]
    if not isinstance(stmt, dict) or not all(isinstance(k, str) for k in stmt):
        _malformed("attStmt must be a map with text keys")
    if cbor.encode(obj) != raw:
        _malformed("attestationObject is not canonical")
    auth_data = parse_authenticator_data(obj["authData"])
    if auth_data.credential_data is None:
        _malformed("attestationObject authData lacks attested credential data")
    return AttestationObject(raw)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _malformed(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> NoReturn:
    _malformed(f"JSON constant {name} not allowed")


def _json_loads(raw: bytes | str, what: str) -> Any:
    if len(raw) > MAX_JSON_BYTES:
        _malformed(f"{what} larger than {MAX_JSON_BYTES} bytes")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


@_strict
def parse_client_data(data: bytes) -> CollectedClientData:
    """Strictly parse clientDataJSON; the returned object *is* the received bytes.

    type, challenge (canonical base64url) and origin must be strings; crossOrigin, when
    present, a bool; topOrigin is only allowed alongside crossOrigin true. Other members
    are allowed (the spec lets clients add them) but must be valid JSON.
    """
    raw = _as_bytes(data, "clientDataJSON")
    obj = _json_loads(raw, "clientDataJSON")
    if not isinstance(obj, dict):
        _malformed("clientDataJSON must be an object")
    for key in ("type", "challenge", "origin"):
        if not isinstance(obj.get(key), str):
            _malformed(f"clientDataJSON.{key} must be a string")
    b64url_decode(obj["challenge"])
    cross = obj.get("crossOrigin", False)
    if type(cross) is not bool:
        _malformed("clientDataJSON.crossOrigin must be a bool")
    if "topOrigin" in obj and (not cross or not isinstance(obj["topOrigin"], str)):
        _malformed("clientDataJSON.topOrigin only with crossOrigin true")
    return CollectedClientData(raw)


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

    @property
    def client_data_json(self) -> bytes:
        return bytes(self.client_data)

    @property
    def attestation_object(self) -> bytes:
        return bytes(self.attestation)


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
        value = _json_loads(raw, "credential JSON")
    if not isinstance(value, Mapping):
        _malformed("credential JSON must be an object")
    return dict(value)


def _only_keys(obj: Mapping[str, Any], allowed: set[str], required: set[str], what: str) -> None:
    keys = set(obj)
    if not all(isinstance(k, str) for k in keys):
        _malformed(f"{what} keys must be strings")
    if unknown := keys - allowed:
        _malformed(f"{what} has unknown members {sorted(unknown)}")
    if missing := required - keys:
        _malformed(f"{what} lacks {sorted(missing)}")


def _b64_field(value: object, what: str) -> bytes:
    if isinstance(value, str) and len(value) > _MAX_B64_FIELD:
        _malformed(f"{what} is too long")
    try:
        return b64url_decode(value)  # type: ignore[arg-type]
    except DeviceBioError:
        _malformed(f"{what} is not canonical unpadded base64url")


def _common_top(obj: dict[str, Any]) -> tuple[bytes, str, str | None, Mapping[str, Any]]:
    _only_keys(obj, _REG_TOP, {"id", "rawId", "type", "response"}, "credential")
    if not isinstance(obj["id"], str):
        _malformed("id must be a string")
    credential_id = _b64_field(obj["rawId"], "rawId")
    if obj["id"] != obj["rawId"]:
        _malformed("id and rawId differ")
    if not 1 <= len(credential_id) <= MAX_CREDENTIAL_ID:
        _malformed("credential id length out of range")
    if not isinstance(obj["type"], str):
        _malformed("type must be a string")
    attachment = obj.get("authenticatorAttachment")
    if attachment is not None and not isinstance(attachment, str):
        _malformed("authenticatorAttachment must be a string")
    results = obj.get("clientExtensionResults", {})
    if not isinstance(results, Mapping) or not all(isinstance(k, str) for k in results):
        _malformed("clientExtensionResults must be an object")
    if not isinstance(obj["response"], Mapping):
        _malformed("response must be an object")
    return credential_id, obj["type"], attachment, dict(results)


@_strict
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
        _malformed("rawId differs from the attested credential id")
    # The L3 convenience members duplicate signed data; when present they must agree with it.
    if "authenticatorData" in resp and _b64_field(resp["authenticatorData"], "authData") != bytes(
        attestation.auth_data
    ):
        _malformed("authenticatorData differs from the attestation object's")
    if "publicKeyAlgorithm" in resp and (
        type(resp["publicKeyAlgorithm"]) is not int
        or resp["publicKeyAlgorithm"] != cred_data.public_key.get(3)
    ):
        _malformed("publicKeyAlgorithm differs from the credential key")
    if "publicKey" in resp:
        spki = _b64_field(resp["publicKey"], "publicKey")
        if cred_data.public_key.get(3) == COSE_ALG_EDDSA and spki != _ed25519_spki(
            ed25519_public_key_from_cose(cred_data.public_key)
        ):
            _malformed("publicKey differs from the credential key")
    transports = resp.get("transports", [])
    if not isinstance(transports, list) or not all(isinstance(t, str) for t in transports):
        _malformed("transports must be a list of strings")
    return RegistrationResponseData(
        credential_id=credential_id,
        type=type_,
        client_data=client_data,
        attestation=attestation,
        authenticator_attachment=attachment,
        transports=tuple(transports),
        client_extension_results=results,
    )


@_strict
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
    auth_data = parse_authenticator_data(_b64_field(resp["authenticatorData"], "authenticatorData"))
    signature = _b64_field(resp["signature"], "signature")
    if not signature:
        _malformed("empty signature")
    user_handle: bytes | None = None
    if resp.get("userHandle") is not None:
        user_handle = _b64_field(resp["userHandle"], "userHandle")
        if not 1 <= len(user_handle) <= MAX_USER_HANDLE:
            _malformed("userHandle must be 1..64 bytes")
    return AuthenticationResponseData(
        credential_id=credential_id,
        type=type_,
        client_data=client_data,
        authenticator_data=auth_data,
        signature=signature,
        user_handle=user_handle,
        authenticator_attachment=attachment,
        client_extension_results=results,
    )


def attested_credential_data(credential_id: bytes, public_key: bytes) -> AttestedCredentialData:
    """AttestedCredentialData for a devicebio Ed25519 credential."""
    if not 1 <= len(credential_id) <= MAX_CREDENTIAL_ID:
        _invalid("credential id length out of range")
    return AttestedCredentialData.create(
        DEVICEBIO_AAGUID, credential_id, ed25519_cose_key(public_key)
    )
