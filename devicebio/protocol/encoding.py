"""Strict encodings shared by every protocol module: base64url, canonical CBOR, strict JSON,
the decorator that turns any stray parser exception into the one typed error, and the
cheaper constructor of the frozen dataclasses a verification builds."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import cbor2
from fido2 import cbor

from devicebio.protocol.errors import ProtocolError, ProtocolReason

__all__ = ["MAX_JSON_BYTES", "b64url_decode", "b64url_encode"]

MAX_JSON_BYTES = 64 * 1024

_P = ParamSpec("_P")
_T = TypeVar("_T")
_C = TypeVar("_C", bound=type)


def malformed(message: str) -> NoReturn:
    raise ProtocolError(ProtocolReason.MALFORMED_DATA, message)


def invalid(message: str) -> NoReturn:
    raise ProtocolError(ProtocolReason.INVALID_ARGUMENT, message)


def strict(func: Callable[_P, _T]) -> Callable[_P, _T]:
    """Turn any stray exception of a parser into the one typed error.

    python-fido2 and the json module raise ValueError, KeyError, IndexError, struct.error,
    UnicodeDecodeError, RecursionError ... on hostile input; callers must only ever see
    ProtocolError.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return func(*args, **kwargs)
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(
                ProtocolReason.MALFORMED_DATA, f"{func.__name__}: {type(exc).__name__}"
            ) from exc

    return wrapper


_NO_VALUE = object()  # the default of a field with a default_factory


def quick_init(cls: _C) -> _C:
    """Give a frozen dataclass an ``__init__`` that fills the instance's ``__dict__``.

    dataclasses' own frozen ``__init__`` sets each field through ``object.__setattr__``
    (about 0.2 us a field on CPython 3.11), and a verification builds several of these
    objects. This one takes the same parameters (names, order, defaults, default factories,
    keyword-only fields), stores the same values and calls ``__post_init__`` as that one
    does; the instance stays frozen (its ``__setattr__`` is untouched). dataclasses' own
    ``__init__`` stays reachable as ``__init__.__wrapped__`` (a test builds with both and
    compares).
    """
    params_ = getattr(cls, "__dataclass_params__", None)
    if params_ is None or not params_.frozen:
        raise TypeError("quick_init is for frozen dataclasses (others are quick already)")
    params: list[str] = []
    kw_only: list[str] = []
    body = ["    _d = self.__dict__"]
    namespace: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_") or f.name == "self":
            raise TypeError(f"quick_init: field {f.name!r} is not a plain init field")
        param = f.name
        value = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"_default_{f.name}"] = f.default
            param += f"=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            param += "=_NO_VALUE"
            value = f"_factory_{f.name}() if {f.name} is _NO_VALUE else {f.name}"
        (kw_only if f.kw_only else params).append(param)
        body.append(f"    _d[{f.name!r}] = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    signature = ", ".join(["self", *params, *(["*", *kw_only] if kw_only else [])])
    exec(f"def __init__({signature}):\n" + "\n".join(body), namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__wrapped__ = vars(cls)["__init__"]
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses assigning a class's __init__)
    return cls


# --------------------------------------------------------------------------- base64url


def b64url_encode(data: bytes) -> str:
    """base64url without padding, as WebAuthn's JSON forms use it."""
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


# Canonical base64url ends on a character whose unused low bits are zero: with 2 characters
# in the last group 4 bits are unused, with 3 characters 2 bits.
_B64URL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
_B64URL_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")


def b64url_decode(text: str) -> bytes:
    """Strict base64url: URL alphabet only, no padding, canonical trailing bits.

    Refusing non-canonical encodings means one byte string has exactly one text form, so
    ``id`` and ``rawId`` can be compared as text and challenges cannot be smuggled in
    look-alike spellings.
    """
    if not isinstance(text, str):
        malformed("base64url value must be a string")
    rem = len(text) % 4
    if rem == 1 or (rem and text[-1] not in _B64URL_LAST[rem]):
        malformed("not canonical unpadded base64url")
    # The one translation turns the URL alphabet into the standard one and the standard
    # alphabet's own "+", "/" and "=" into "!", which strict_mode refuses with every other
    # non-alphabet character (a2b sees only the padding added here): cheaper than a regular
    # expression or substring scans over the text.
    try:
        return binascii.a2b_base64(
            text.encode("ascii").translate(_B64URL_TO_STD) + b"=="[: (4 - rem) % 4],
            strict_mode=True,
        )
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        malformed("not canonical unpadded base64url")


def as_bytes(data: object, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        malformed(f"{what} must be bytes")
    return bytes(data)


def _text_keyed(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(type(k) is str and _text_keyed(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_text_keyed(v) for v in obj)
    return True


def canonical_cbor(obj: Any) -> bytes:
    """fido2's canonical encoding of what fido2's decoder returned, faster.

    fido2 sorts map keys by first byte, then length, then bytes; cbor2's canonical order is
    length first. They agree when every key is text (a property test checks this), which is
    what devicebio's extensions use, and cbor2's C encoder is about 3x faster. Any other key
    type keeps fido2's own encoder, so nothing fido2 refused becomes acceptable.
    """
    if _text_keyed(obj):
        return cbor2.dumps(obj, canonical=True)
    return cbor.encode(obj)


class _Fallback(Exception):
    """Inside :func:`decode_canonical`: leave this input to the reference check."""


# Deeper nesting than this goes to the reference check, whose own recursion bounds it, so
# the single-pass reader never accepts what decode + re-encode would have refused.
_MAX_FAST_DEPTH = 32
# The smallest value each additional-information width may carry in canonical form.
_MIN_FOR_WIDTH = {25: 0x100, 26: 0x10000, 27: 0x100000000}
_WIDTH = {25: 2, 26: 4, 27: 8}


def _read(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    fb = data[pos]
    pos += 1
    major, ai = fb >> 5, fb & 31
    if major == 7:
        if fb == 0xF5:
            return True, pos
        if fb == 0xF4:
            return False, pos
        malformed("CBOR simple value, float or null is not allowed")
    if ai < 24:
        n = ai
    elif ai == 24:
        n = data[pos]
        pos += 1
        if n < 24:
            malformed("CBOR head is not minimal")
    elif ai <= 27:
        end = pos + _WIDTH[ai]
        if end > len(data):
            malformed("CBOR head truncated")
        n = int.from_bytes(data[pos:end], "big")
        pos = end
        if n < _MIN_FOR_WIDTH[ai]:
            malformed("CBOR head is not minimal")
    else:
        malformed("CBOR indefinite length or reserved head")
    if major == 3 or major == 2:
        end = pos + n
        if end > len(data):
            malformed("CBOR string truncated")
        if major == 2:
            return data[pos:end], end
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError:
            malformed("CBOR text is not UTF-8")
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 6:
        malformed("CBOR tags are not allowed")
    if depth >= _MAX_FAST_DEPTH:
        raise _Fallback
    depth += 1
    if major == 4:
        items = []
        for _ in range(n):
            item, pos = _read(data, pos, depth)
            items.append(item)
        return items, pos
    # major 5: a map. Text keys only on this path, each encoding strictly after the one
    # before in canonical order (shorter first, then bytewise), so no duplicates either.
    out: dict[str, Any] = {}
    previous = b""
    for _ in range(n):
        start = pos
        head = data[pos]
        if head >> 5 != 3:
            raise _Fallback
        if head < 0x78:  # a text key shorter than 24 bytes: its head is one byte
            pos += 1 + (head & 31)
            if pos > len(data):
                malformed("CBOR string truncated")
            encoded = data[start:pos]
            try:
                key = encoded[1:].decode("utf-8")
            except UnicodeDecodeError:
                malformed("CBOR text is not UTF-8")
        else:
            key, pos = _read(data, pos, depth)
            encoded = data[start:pos]
        if len(encoded) < len(previous) or (len(encoded) == len(previous) and encoded <= previous):
            malformed("CBOR map keys are not in canonical order")
        previous = encoded
        out[key], pos = _read(data, pos, depth)
    return out, pos


def _reference_decode(raw: bytes) -> Any:
    # The rule the single-pass reader implements: fido2's decoder, then a canonical
    # re-encode that must give back exactly the received bytes.
    obj = cbor.decode(raw)
    if canonical_cbor(obj) != raw:
        malformed("CBOR is not canonical")
    return obj


def decode_canonical(data: bytes) -> Any:
    """Decode ``data``, one CTAP2-canonical CBOR item with nothing after it, in one pass.

    Accepts exactly what python-fido2's decoder followed by a canonical re-encode equal to
    the input accepts (a property test holds the two equal): definite lengths, minimal
    heads, integers, byte and UTF-8 text strings, arrays, maps with keys in canonical order
    and no duplicates, ``true``/``false``; never floats, tags, ``null`` or trailing bytes.
    A map with a non-text key, or nesting deeper than 32, takes the reference path (decode,
    re-encode, compare) instead. Anything else: ``ProtocolError(MALFORMED_DATA)``.
    """
    raw = bytes(data)
    try:
        obj, end = _read(raw, 0, 0)
    except _Fallback:
        return _wrapped_reference(raw)
    except IndexError:
        malformed("CBOR truncated")
    if end != len(raw):
        malformed("trailing bytes after CBOR")
    return obj


def _wrapped_reference(raw: bytes) -> Any:
    try:
        return _reference_decode(raw)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(ProtocolReason.MALFORMED_DATA, f"CBOR: {type(exc).__name__}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                malformed(f"duplicate JSON key {key!r}")
            seen.add(key)
    return out


def _no_constants(name: str) -> NoReturn:
    malformed(f"JSON constant {name} not allowed")


# One decoder for every strict parse (json.loads with options builds a new one per call).
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constants
).decode


def json_loads(raw: bytes | str, what: str) -> Any:
    if len(raw) > MAX_JSON_BYTES:
        malformed(f"{what} larger than {MAX_JSON_BYTES} bytes")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return _STRICT_JSON(text)


def exact_map(obj: object, *, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        malformed(f"{what} must be a map")
    keys = obj.keys()
    if not all(isinstance(k, str) for k in keys):
        malformed(f"{what} keys must be text")
    if missing := required - keys:
        malformed(f"{what} lacks {sorted(missing)}")
    if unknown := keys - required - optional:
        malformed(f"{what} has unknown fields {sorted(unknown)}")
    return obj


def typed(value: object, kind: type[_T], what: str) -> _T:
    # `type(...) is` on purpose: bool is an int subclass, and a bytes subclass such as
    # fido2's Aaguid must not pass for plain bytes in a strict schema.
    if kind is bytes:
        ok = isinstance(value, bytes)
    elif kind is int:
        ok = type(value) is int
    else:
        ok = type(value) is kind
    if not ok:
        malformed(f"{what} must be {kind.__name__}")
    return value  # type: ignore[return-value]
