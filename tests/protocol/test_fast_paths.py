"""The verifier's fast paths decide exactly as the reference rules they replace.

- ``decode_canonical`` (one pass) against the reference: fido2's decoder, then a canonical
  re-encode that must give back the input;
- ``parse_authenticator_data`` against fido2's own constructor, field by field;
- ``b64url_decode`` against decode + re-encode;
- ``liveness_expectation`` against ``liveness_sequence_hash`` / ``minimum_frames``;
- ``plain_extension`` / ``_plain_assertion`` (cbor2's C decoder, accept side only) against
  the strict extension decoder and ``parse_authenticator_data``;
- ``quick_init`` against the ``__init__`` dataclasses generated.

Inputs are valid encodings, their one-byte mutations, truncations and extensions, and
hand-made non-canonical forms, so that both the accept and the refuse sides are exercised.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import inspect
import json
import re
from typing import Any

import cbor2
import pytest
from fido2 import cbor
from fido2.webauthn import AuthenticatorData, CollectedClientData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicebio.protocol import (
    AuthenticationResponseData,
    DevicebioExtension,
    LivenessClaim,
    Method,
    ProtocolError,
    ProtocolReason,
    b64url_decode,
    liveness_expectation,
    liveness_plan,
    liveness_sequence_hash,
    minimum_frames,
    parse_authenticator_data,
    parse_client_data,
)
from devicebio.protocol.encoding import (
    _reference_decode,
    canonical_cbor,
    decode_canonical,
    json_loads,
    quick_init,
)
from devicebio.protocol.extension import devicebio_extension_of, plain_extension
from devicebio.protocol.webauthn import _only_keys, _plain_assertion

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_LEAF = st.one_of(st.integers(-(2**64), 2**64 - 1), st.booleans(), st.text(), st.binary())
_KEY = st.one_of(st.text(max_size=30), st.integers(-300, 300), st.binary(max_size=3))
_VALUES = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=30), inner, max_size=6),
        st.dictionaries(_KEY, inner, max_size=4),
    ),
    max_leaves=30,
)


def _outcome(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(raw)
    except ProtocolError as exc:
        assert exc.reason is ProtocolReason.MALFORMED_DATA
        return "refused", None
    except Exception:  # the reference leaks fido2's errors; the callers wrap them
        return "refused", None


def _same(raw: bytes) -> None:
    fast = _outcome(decode_canonical, raw)
    ref = _outcome(_reference_decode, raw)
    assert fast[0] == ref[0], raw.hex()
    if fast[0] == "ok":
        assert fast[1] == ref[1]
        assert type(fast[1]) is type(ref[1])
    else:  # the fast path raises only the typed error
        with pytest.raises(ProtocolError):
            decode_canonical(raw)


def _encodings(obj: object) -> list[bytes]:
    out = [cbor2.dumps(obj, canonical=True), cbor2.dumps(obj)]
    with contextlib.suppress(ValueError):
        out.append(cbor.encode(obj))  # type: ignore[arg-type]
    return out


@SETTINGS
@given(_VALUES, st.data())
def test_decode_canonical_accepts_exactly_what_decode_and_re_encode_accepted(obj, data):
    for raw in _encodings(obj):
        _same(raw)
        if raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            flipped = bytearray(raw)
            flipped[i] ^= data.draw(st.integers(1, 255))
            _same(bytes(flipped))
            _same(raw[:i])
            _same(raw + data.draw(st.binary(min_size=1, max_size=3)))


@SETTINGS
@given(st.binary(max_size=60))
def test_decode_canonical_on_random_bytes(raw):
    _same(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x18\x05",  # 5 in a one-byte head
        b"\x19\x00\x05",  # 5 in a two-byte head
        b"\x1a\x00\x00\x00\xff",
        b"\x1b\x00\x00\x00\x00\xff\xff\xff\xff",
        b"\x5f\x41\x00\xff",  # indefinite byte string
        b"\x9f\x01\xff",  # indefinite array
        b"\xbf\x61a\x01\xff",  # indefinite map
        b"\xa2\x61b\x01\x61a\x02",  # keys out of order
        b"\xa2\x61a\x01\x61a\x02",  # duplicate key
        b"\xa2\x62aa\x01\x61b\x02",  # longer key first
        b"\xf6",  # null
        b"\xf7",  # undefined
        b"\xf9\x3c\x00",  # half float
        b"\xc1\x01",  # tag
        b"\x62\xc3\x28",  # bad UTF-8
        b"\x43\x01\x02",  # truncated byte string
        b"\x01\x01",  # trailing byte
        b"",
    ],
)
def test_decode_canonical_refuses_non_canonical_forms(raw):
    with pytest.raises(ProtocolError) as info:
        decode_canonical(raw)
    assert info.value.reason is ProtocolReason.MALFORMED_DATA
    _same(raw)


def test_deep_nesting_takes_the_reference_path():
    for depth in (31, 32, 33, 40, 600):
        raw = b"\x81" * depth + b"\x01"
        _same(raw)
        raw = b"\xa1\x61a" * depth + b"\x01"
        _same(raw)


_HEADER = st.tuples(
    st.binary(min_size=32, max_size=32), st.integers(0, 255), st.integers(0, 2**32 - 1)
)


def _fido2_outcome(raw: bytes) -> tuple[str, Any]:
    """The old rule: fido2's constructor, then a canonical re-encode of the extensions."""
    try:
        parsed = AuthenticatorData(raw)
    except Exception:
        return "refused", None
    tail = b"" if parsed.extensions is None else canonical_cbor(parsed.extensions)
    if raw[37:] != tail:
        return "refused", None
    if parsed.has_extension_data() and not isinstance(parsed.extensions, dict):
        return "refused", None
    return "ok", parsed


@SETTINGS
@given(_HEADER, st.one_of(st.none(), _VALUES), st.data())
def test_assertion_authenticator_data_parses_as_fido2_does(header, ext, data):
    rp_id_hash, flags, counter = header
    flags &= ~0x40  # assertions: no attested credential data
    bodies = [b""] if ext is None else _encodings(ext)
    for body in bodies:
        raw = rp_id_hash + bytes([flags]) + counter.to_bytes(4, "big") + body
        if body and data.draw(st.booleans()):
            raw = raw + data.draw(st.binary(min_size=1, max_size=2))
        want = _fido2_outcome(raw)
        try:
            got = parse_authenticator_data(raw)
        except ProtocolError as exc:
            assert exc.reason is ProtocolReason.MALFORMED_DATA
            assert want[0] == "refused", raw.hex()
            continue
        assert want[0] == "ok", raw.hex()
        ref = want[1]
        assert type(got) is AuthenticatorData and bytes(got) == raw
        assert got.rp_id_hash == ref.rp_id_hash
        assert got.flags == ref.flags and got.counter == ref.counter
        assert got.credential_data is None and ref.credential_data is None
        assert got.extensions == ref.extensions
        assert got.has_extension_data() == ref.has_extension_data()


def _old_b64url(text: str) -> bytes | None:
    if not isinstance(text, str) or len(text) % 4 == 1:
        return None
    if re.fullmatch(r"[A-Za-z0-9_-]*", text) is None:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != text:
        return None
    return data


@SETTINGS
@given(st.one_of(st.text(alphabet="AQgwBCDb-_=+/ \n", max_size=12), st.text(max_size=8)))
def test_b64url_decode_accepts_exactly_the_canonical_forms(text):
    want = _old_b64url(text)
    try:
        got: bytes | None = b64url_decode(text)
    except ProtocolError as exc:
        assert exc.reason is ProtocolReason.MALFORMED_DATA
        got = None
    assert got == want


@SETTINGS
@given(st.binary(max_size=40))
def test_b64url_decode_round_trips(data):
    text = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert b64url_decode(text) == data


@SETTINGS
@given(st.binary(min_size=1, max_size=1024))
def test_liveness_expectation_is_the_plan_hash_and_frame_floor(challenge):
    plan = liveness_plan(challenge)
    assert liveness_expectation(challenge) == (
        liveness_sequence_hash(challenge, plan),
        minimum_frames(plan),
    )


@pytest.mark.parametrize("bad", [b"", b"x" * 1025, "text", None])
def test_liveness_expectation_refuses_what_the_plan_refuses(bad):
    with pytest.raises(ProtocolError):
        liveness_plan(bad)
    with pytest.raises(ProtocolError):
        liveness_expectation(bad)


@SETTINGS
@given(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["webauthn.get", "webauthn.create", "x"]),
            "challenge": st.binary(min_size=1, max_size=40).map(
                lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
            ),
            "origin": st.text(max_size=20),
        },
        optional={"crossOrigin": st.booleans(), "other": st.integers()},
    )
)
def test_client_data_fields_are_fido2s(obj):
    raw = json.dumps(obj).encode()
    ours, theirs = parse_client_data(raw), CollectedClientData(raw)
    assert type(ours) is CollectedClientData and bytes(ours) == raw
    for name in ("type", "challenge", "origin", "cross_origin", "hash"):
        assert getattr(ours, name) == getattr(theirs, name)
    assert ours == theirs


@pytest.mark.parametrize("text", ['{"a":1,"a":2}', '{"b":{"x":1,"y":2,"x":3}}'])
def test_duplicate_json_keys_are_refused(text):
    with pytest.raises(ProtocolError):
        json_loads(text, "test")


# --------------------------------------------------------------------------- plain assertions
# The verifier's hot path reads a device's usual authenticatorData with cbor2's C decoder and
# builds the extension straight from its plain shape (accept side only). Whatever it
# accepts, the strict path must accept with equal fields; what it declines goes to the
# strict path, so it never refuses anything itself.

_TOKEN = st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}", fullmatch=True)
_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)
_ODD = st.one_of(
    st.none(), st.integers(-3, 3), st.booleans(), st.text(max_size=4), st.binary(max_size=4)
)


@st.composite
def _extension_maps(draw: st.DrawFn) -> Any:
    """devicebio extension maps: valid ones, and ones with a field dropped, added, retyped
    or given an out-of-range value."""
    method = draw(st.sampled_from(["face", "pin", "recovery", "security-key", "Face", "x"]))
    live: dict[str, Any] = {
        "k": draw(st.one_of(st.just("active-challenge"), st.just("none"), _TOKEN)),
        "p": draw(st.booleans()),
        "f": draw(st.one_of(st.integers(0, 100_000), st.integers(-2, 200_000))),
    }
    if draw(st.booleans()):
        live["h"] = draw(st.binary(min_size=draw(st.sampled_from([16, 32, 64, 15, 65]))))
    ext: dict[str, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 2, 0])),
        "m": method,
        "l": live,
        "a": draw(st.one_of(_TOKEN, st.just("Moderate"))),
    }
    for key, value in (("md", _PRINTABLE), ("s", _PRINTABLE), ("d", st.binary(max_size=17))):
        if draw(st.booleans()):
            ext[key] = draw(value)
    for target in (ext, live):
        if draw(st.integers(0, 5)) == 0:
            target.pop(draw(st.sampled_from(sorted(target))), None)
        if draw(st.integers(0, 5)) == 0:
            target[draw(st.sampled_from([*target, "zz", "q"]))] = draw(_ODD)
    return ext


def _strict_extension(obj: object) -> Any:
    try:
        return DevicebioExtension.from_cbor_obj(obj)
    except ProtocolError:
        return None


@SETTINGS
@given(_extension_maps())
def test_plain_extension_accepts_only_what_the_strict_decoder_accepts_equal(obj):
    fast = plain_extension(obj)
    if fast is not None:
        assert fast == _strict_extension(obj)
    # A valid map in canonical key order is the plain shape: the fast path takes it.
    if _strict_extension(obj) is not None and canonical_cbor(obj) == cbor2.dumps(obj):
        assert fast is not None


def _strict_assertion(raw: bytes) -> tuple[str, Any]:
    try:
        parsed = parse_authenticator_data(raw)
        ext = devicebio_extension_of(parsed)
    except ProtocolError:
        return "refused", None
    return "ok", (parsed, ext)


@SETTINGS
@given(_HEADER, _extension_maps(), st.data())
def test_plain_assertion_accepts_only_what_the_strict_parse_accepts_equal(header, ext, data):
    rp_id_hash, flags, counter = header
    head = rp_id_hash + bytes([flags]) + counter.to_bytes(4, "big")
    wrapped = {"devicebio": ext}
    bodies = [*_encodings(wrapped), cbor2.dumps({**wrapped, "other": 1})]
    for body in bodies:
        raws = [head + body]
        if body:
            i = data.draw(st.integers(0, len(body) - 1))
            flipped = bytearray(body)
            flipped[i] ^= data.draw(st.integers(1, 255))
            raws += [head + bytes(flipped), head + body[:i], head + body + b"\x00"]
        for raw in raws:
            fast = _plain_assertion(raw)
            if fast is None:
                continue
            want = _strict_assertion(raw)
            assert want[0] == "ok", raw.hex()
            ref, ref_ext = want[1]
            got, got_ext = fast
            assert type(got) is AuthenticatorData and bytes(got) == raw
            assert (got.rp_id_hash, got.flags, got.counter) == (
                ref.rp_id_hash,
                ref.flags,
                ref.counter,
            )
            assert got.credential_data is None and got.extensions == ref.extensions
            assert got_ext == ref_ext


def test_a_device_assertion_takes_the_plain_path():
    ext = DevicebioExtension(
        method=Method.FACE,
        liveness=LivenessClaim("active-challenge", True, b"\x07" * 32, 500),
        model="dlib-resnet@sha256:0123",
        assurance="moderate",
        sdk_version="0.1.0",
    )
    raw = (
        b"\x11" * 32 + bytes([0x85]) + (7).to_bytes(4, "big") + canonical_cbor(ext.to_extensions())
    )
    fast = _plain_assertion(raw)
    assert fast is not None and fast[1] == ext
    assert _strict_assertion(raw) == ("ok", fast)


# ---- quick_init: the frozen dataclasses of a verification, built without object.__setattr__

_QUICK = (LivenessClaim, DevicebioExtension, AuthenticationResponseData)


def _params(init: Any) -> list[tuple[str, Any, bool]]:
    sig = inspect.signature(init, follow_wrapped=False)
    return [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in sig.parameters.values()]


@pytest.mark.parametrize("cls", _QUICK)
def test_quick_init_takes_the_dataclass_parameters(cls):
    quick, generated = cls.__init__, cls.__init__.__wrapped__
    assert quick is not generated
    assert _params(quick) == _params(generated)
    sig = inspect.signature(generated)
    for f in dataclasses.fields(cls):
        default = inspect.signature(quick, follow_wrapped=False).parameters[f.name].default
        if f.default is not dataclasses.MISSING:
            assert default is f.default is sig.parameters[f.name].default


def _built(cls: type, init: Any, args: tuple, kwargs: dict) -> tuple[str, Any]:
    obj = object.__new__(cls)
    try:
        init(obj, *args, **kwargs)
    except ProtocolError as exc:
        return "refused", (exc.reason, exc.detail)
    except TypeError:  # a missing or unknown argument
        return "wrong call", None
    return "ok", vars(obj)


def _both(cls: type, *args: Any, **kwargs: Any) -> None:
    quick = _built(cls, cls.__init__, args, kwargs)
    assert quick == _built(cls, cls.__init__.__wrapped__, args, kwargs)
    if quick[0] == "ok":
        obj = cls(*args, **kwargs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.frames = 1
        assert obj == cls(*args, **kwargs)


_ANY = st.one_of(_ODD, _TOKEN, st.binary(min_size=16, max_size=64), st.integers(0, 100_001))


@SETTINGS
@given(_ANY, _ANY, st.one_of(st.none(), _ANY), _ANY)
def test_quick_init_liveness_claim_is_the_dataclass_init(kind, passed, digest, frames):
    _both(LivenessClaim, kind, passed, digest, frames)
    _both(LivenessClaim, kind, passed)
    _both(LivenessClaim, kind=kind, passed=passed, frames=frames)


@SETTINGS
@given(_extension_maps(), _ANY)
def test_quick_init_extension_is_the_dataclass_init(obj, odd):
    live = obj.get("l") if isinstance(obj.get("l"), dict) else {}
    claim = LivenessClaim.none()  # or, where the map's own claim is valid, that one
    with contextlib.suppress(ProtocolError, TypeError):
        claim = LivenessClaim(live.get("k"), live.get("p"), live.get("h"), live.get("f", 0))
    names = {"v": "version", "m": "method", "md": "model", "a": "assurance"}
    names |= {"d": "device_id", "s": "sdk_version"}
    kwargs = {names[k]: v for k, v in obj.items() if k in names}
    _both(DevicebioExtension, liveness=claim, **kwargs)
    _both(DevicebioExtension, liveness=odd, **kwargs)
    with pytest.raises(TypeError):
        DevicebioExtension(claim, **kwargs)  # keyword-only, as the dataclass init


def test_quick_init_response_data_fills_the_default_factory():
    args = (b"id", "public-key", None, None, b"sig", None, None)
    a, b = AuthenticationResponseData(*args), AuthenticationResponseData(*args)
    assert a.client_extension_results == {} and a.extension is None
    assert a.client_extension_results is not b.client_extension_results
    _both(AuthenticationResponseData, *args)
    _both(AuthenticationResponseData, *args, client_extension_results={"x": 1}, extension=None)
    with pytest.raises(TypeError):
        AuthenticationResponseData(*args[:-1])


def test_quick_init_refuses_what_it_cannot_copy():
    @dataclasses.dataclass
    class Plain:
        a: int

    with pytest.raises(TypeError):
        quick_init(Plain)


@pytest.mark.parametrize("where", ["h", "md", "d", "s"])
def test_plain_extension_refuses_a_null_optional_member(where):
    # A present optional member holds its type; null is not "absent" (the strict decoder
    # refuses it, and so must the plain path, or the two would disagree).
    ext = DevicebioExtension(
        method=Method.FACE,
        liveness=LivenessClaim("active-challenge", True, b"\x07" * 32, 500),
        model="dlib-resnet@sha256:0123",
        assurance="moderate",
        device_id=b"\x01" * 16,
        sdk_version="0.1.0",
    ).to_cbor_obj()
    ext = cbor2.loads(canonical_cbor(ext))  # keys in canonical order, as a device sends them
    assert plain_extension(ext) is not None
    (ext["l"] if where == "h" else ext)[where] = None
    assert plain_extension(ext) is None
    assert _strict_extension(ext) is None
    raw = b"\x11" * 32 + bytes([0x85]) + (7).to_bytes(4, "big") + cbor2.dumps({"devicebio": ext})
    assert _plain_assertion(raw) is None
    assert _strict_assertion(raw)[0] == "refused"


def _only_keys_reference(obj, allowed, required, what):
    # The member check as it was before its C-level form (main 926a6e7).
    keys = set(obj)
    if not all(isinstance(k, str) for k in keys):
        raise ProtocolError(ProtocolReason.MALFORMED_DATA, f"{what} keys must be strings")
    if unknown := keys - allowed:
        raise ProtocolError(
            ProtocolReason.MALFORMED_DATA, f"{what} has unknown members {sorted(unknown)}"
        )
    if missing := required - keys:
        raise ProtocolError(ProtocolReason.MALFORMED_DATA, f"{what} lacks {sorted(missing)}")


def _decision(fn, *args):
    try:
        fn(*args)
    except ProtocolError as exc:
        return exc.reason, exc.detail
    return "ok"


@SETTINGS
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(["id", "rawId", "type", "response", "x", "clientExtensionResults"]),
            st.integers(-2, 2),
            st.binary(max_size=2),
        ),
        st.none(),
        max_size=7,
    )
)
def test_only_keys_decides_as_the_reference(obj):
    allowed = {"id", "rawId", "type", "response", "clientExtensionResults"}
    required = {"id", "rawId", "type", "response"}
    assert _decision(_only_keys, obj, allowed, required, "credential") == _decision(
        _only_keys_reference, obj, allowed, required, "credential"
    )
