"""Strict encodings shared by every protocol module: base64url, canonical CBOR, strict JSON,
and the decorator that turns any stray parser exception into the one typed error."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import cbor2
from fido2 import cbor

from devicebio.protocol.errors import ProtocolError, ProtocolReason

__all__ = ["MAX_JSON_BYTES", "b64url_decode", "b64url_encode"]

MAX_JSON_BYTES = 64 * 1024

_P = ParamSpec("_P")
_T = TypeVar("_T")


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
        malformed("base64url value must be a string")
    if len(text) % 4 == 1 or _B64URL_RE.fullmatch(text) is None:
        malformed("not canonical unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        malformed("not canonical unpadded base64url")
    if b64url_encode(data) != text:
        malformed("not canonical unpadded base64url")
    return data


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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            malformed(f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> NoReturn:
    malformed(f"JSON constant {name} not allowed")


def json_loads(raw: bytes | str, what: str) -> Any:
    if len(raw) > MAX_JSON_BYTES:
        malformed(f"{what} larger than {MAX_JSON_BYTES} bytes")
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def exact_map(obj: object, *, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        malformed(f"{what} must be a map")
    keys = set(obj)
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
