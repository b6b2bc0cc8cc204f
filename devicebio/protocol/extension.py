"""The ``devicebio`` authenticator extension: *how* the user was verified.

Its CBOR form (authenticator extension output, inside authenticatorData)::

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

"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Any

from fido2.webauthn import AuthenticatorData

from devicebio.protocol.encoding import exact_map, invalid, malformed, quick_init, strict, typed
from devicebio.protocol.errors import ProtocolError, ProtocolReason

EXTENSION_ID = "devicebio"
_ED_FLAG = int(AuthenticatorData.FLAG.ED)


class Method(enum.StrEnum):
    """How the device verified the user."""

    FACE = "face"
    PIN = "pin"
    RECOVERY = "recovery"
    SECURITY_KEY = "security-key"


_METHODS = {m.value: m for m in Method}
_FACE = Method.FACE  # a module global: reading a member off its enum class is ~10x dearer
_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_PRINTABLE_RE = re.compile(r"[\x21-\x7e][\x20-\x7e]*")


# A device sends the same kind, assurance, model and SDK version at every sign-in, and the
# verifier checks each: one regular-expression match per distinct value, not per sign-in
# (bounded, so hostile values cannot grow it).
@functools.lru_cache(maxsize=512)
def _is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


@functools.lru_cache(maxsize=512)
def _is_printable(text: str) -> bool:
    return _PRINTABLE_RE.fullmatch(text) is not None


_MAX_FRAMES = 100_000


def _reworded(exc: ProtocolError) -> ProtocolError:
    # A constructor's INVALID_ARGUMENT becomes MALFORMED_DATA when the value came off the wire.
    return ProtocolError(ProtocolReason.MALFORMED_DATA, exc.detail)


@quick_init
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
        if not isinstance(self.kind, str) or not _is_token(self.kind):
            invalid("liveness kind must match [a-z0-9][a-z0-9-]{0,31}")
        if type(self.passed) is not bool:
            invalid("liveness passed must be a bool")
        if self.kind == "none" and self.passed:
            invalid('liveness kind "none" cannot have passed')
        if self.sequence_hash is not None and (
            type(self.sequence_hash) is not bytes or not 16 <= len(self.sequence_hash) <= 64
        ):
            invalid("liveness sequence_hash must be 16..64 bytes")
        if type(self.frames) is not int or not 0 <= self.frames <= _MAX_FRAMES:
            invalid(f"liveness frames must be an int in 0..{_MAX_FRAMES}")

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
        fields_ = exact_map(obj, required={"k", "p", "f"}, optional={"h"}, what="liveness")
        try:
            return cls(
                kind=typed(fields_["k"], str, "liveness kind"),
                passed=typed(fields_["p"], bool, "liveness passed"),
                frames=typed(fields_["f"], int, "liveness frames"),
                sequence_hash=(
                    typed(fields_["h"], bytes, "liveness hash") if "h" in fields_ else None
                ),
            )
        except ProtocolError as exc:
            raise _reworded(exc) from None


@quick_init
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
            invalid("only devicebio extension version 1 exists")
        if not isinstance(self.method, Method):
            try:
                object.__setattr__(self, "method", Method(self.method))
            except ValueError:
                invalid("unknown method")
        if not isinstance(self.liveness, LivenessClaim):
            invalid("liveness must be a LivenessClaim")
        if self.method is not _FACE and self.liveness.kind != "none":
            invalid("only the face method carries a liveness check")
        if self.model is not None and (
            not isinstance(self.model, str)
            or len(self.model) > 128
            or not _is_printable(self.model)
        ):
            invalid("model must be 1..128 printable ASCII characters")
        if not isinstance(self.assurance, str) or not _is_token(self.assurance):
            invalid("assurance must match [a-z0-9][a-z0-9-]{0,31}")
        if self.device_id is not None and (
            type(self.device_id) is not bytes or len(self.device_id) != 16
        ):
            invalid("device_id must be 16 bytes")
        if self.sdk_version is not None and (
            not isinstance(self.sdk_version, str)
            or len(self.sdk_version) > 64
            or not _is_printable(self.sdk_version)
        ):
            invalid("sdk_version must be 1..64 printable ASCII characters")

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
        """Strict: unknown, missing or mistyped fields -> ProtocolError(MALFORMED_DATA)."""
        f = exact_map(
            obj, required={"v", "m", "l", "a"}, optional={"md", "d", "s"}, what="devicebio"
        )
        version = typed(f["v"], int, "version")
        if version != 1:
            malformed(f"unsupported devicebio extension version {version}")
        method = _METHODS.get(typed(f["m"], str, "method"))
        if method is None:
            malformed("unknown method")
        liveness = LivenessClaim.from_cbor_obj(f["l"])
        try:
            return cls(
                version=version,
                method=method,
                liveness=liveness,
                model=typed(f["md"], str, "model") if "md" in f else None,
                assurance=typed(f["a"], str, "assurance"),
                device_id=typed(f["d"], bytes, "device_id") if "d" in f else None,
                sdk_version=typed(f["s"], str, "sdk_version") if "s" in f else None,
            )
        except ProtocolError as exc:
            raise _reworded(exc) from None

    def to_extensions(self) -> dict[str, Any]:
        """The authenticator-extension map to put in authenticatorData."""
        return {EXTENSION_ID: self.to_cbor_obj()}


def _canonical_shapes(
    order: tuple[str, ...], required: frozenset[str]
) -> frozenset[tuple[str, ...]]:
    # Every key sequence a map may have: known keys only, in CTAP2 canonical order (shorter
    # first, then bytewise: ``order``), so no duplicates, the required ones present.
    shapes = set()
    for mask in range(1 << len(order)):
        keys = tuple(k for i, k in enumerate(order) if mask >> i & 1)
        if required <= set(keys):
            shapes.add(keys)
    return frozenset(shapes)


_EXTENSION_SHAPES = _canonical_shapes(("a", "d", "l", "m", "s", "v", "md"), frozenset("vmla"))
_LIVENESS_SHAPES = _canonical_shapes(("f", "h", "k", "p"), frozenset("kpf"))


def plain_extension(obj: object) -> DevicebioExtension | None:
    """:meth:`DevicebioExtension.from_cbor_obj` for the plain shape, or ``None``.

    The accept side only, for the verifier's hot path: a map whose keys are the documented
    ones in canonical order and whose every value has its exact documented type goes
    straight to the constructors (which keep every value check); anything else returns
    ``None``, and the strict path then decides and says why. What this accepts,
    ``from_cbor_obj`` accepts with an equal result (property test).
    """
    if type(obj) is not dict or tuple(obj) not in _EXTENSION_SHAPES:
        return None
    live = obj["l"]
    if type(live) is not dict or tuple(live) not in _LIVENESS_SHAPES:
        return None
    method = obj["m"]
    kind, passed, frames = live["k"], live["p"], live["f"]
    digest, model = live.get("h"), obj.get("md")
    device_id, sdk = obj.get("d"), obj.get("s")
    if (
        type(obj["v"]) is not int
        or obj["v"] != 1
        or type(method) is not str
        or method not in _METHODS
        or type(obj["a"]) is not str
        or type(kind) is not str
        or type(passed) is not bool
        or type(frames) is not int
        # An optional key, when present, holds its type: a CBOR null is refused as the
        # strict decoder refuses it, not read as "absent".
        or ("h" in live and type(digest) is not bytes)
        or ("md" in obj and type(model) is not str)
        or ("d" in obj and type(device_id) is not bytes)
        or ("s" in obj and type(sdk) is not str)
    ):
        return None
    try:
        return DevicebioExtension(
            method=_METHODS[method],
            liveness=LivenessClaim(kind, passed, digest, frames),
            model=model,
            assurance=obj["a"],
            device_id=device_id,
            sdk_version=sdk,
        )
    except ProtocolError:
        return None


@strict
def devicebio_extension_of(auth_data: AuthenticatorData) -> DevicebioExtension | None:
    """The ``devicebio`` extension in parsed authenticator data, or None when absent.

    Present-but-invalid raises MALFORMED_DATA; other extensions are left to the caller.
    """
    extensions = auth_data.extensions
    # The ED flag read from the flags byte as a plain int (has_extension_data() goes through
    # IntFlag arithmetic, a microsecond or two on every verification).
    if not int(auth_data.flags) & _ED_FLAG or extensions is None:
        return None
    if EXTENSION_ID not in extensions:
        return None
    return DevicebioExtension.from_cbor_obj(extensions[EXTENSION_ID])
