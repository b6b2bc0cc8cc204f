"""Every parser of devicebio.protocol, fed random and mutated bytes / CBOR / JSON, either returns a
valid value or raises ProtocolError(MALFORMED_DATA) — never anything else. The verifier,
fed the same, raises only VerifierError. Plus the strictness rules, case by case."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from fido2 import cbor
from fido2.webauthn import AuthenticatorData
from helpers.claims import face
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from devicebio import protocol
from devicebio.hazmat.credentials import Credentials
from devicebio.protocol import (
    DevicebioExtension,
    LivenessClaim,
    Method,
    ProtocolError,
    ProtocolReason,
)
from devicebio.store.vault import RawKey, Vault
from verifier import (
    CredentialRecord,
    Purpose,
    SQLiteStore,
    VerifiedAssertion,
    VerifierError,
    verify_assertion,
    verify_registration,
)
from verifier import Reason as VReason

RP = "example.com"
ORIGIN = "https://example.com"
CHALLENGE = b"property-test-challenge-0123456789"
FACE = face(CHALLENGE)
F = AuthenticatorData.FLAG
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real registration and assertion to mutate (made once: the vault fsyncs)."""
    path: Path = tmp_path_factory.mktemp("wire") / "vault"
    creds = Credentials(Vault.create(path, RawKey(b"\x77" * 32)))
    reg = creds.register(
        rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, user_name="alice", verification=FACE
    )
    assertion = creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    return {"reg": reg, "assertion": assertion}


def _only_malformed(func: Any, *args: Any) -> Any:
    try:
        return func(*args)
    except ProtocolError as exc:
        # a whole response whose devicebio extension alone is bad has its own reason
        assert exc.reason in (ProtocolReason.MALFORMED_DATA, ProtocolReason.EXTENSION_INVALID), exc
        return None


# ----------------------------------------------------------------- strategies

cbor_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=40),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-30, 30)), inner, max_size=5),
    ),
    max_leaves=20,
)
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """A few random edits of ``data``: flips, insertions, deletions, truncation."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not buf:
            break
        i = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[i] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del buf[i : i + draw(st.integers(1, 4))]
        else:
            del buf[i:]
    return bytes(buf)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_paths(v, (*prefix, k)))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(obj)
    copy[path[0]] = _replace(obj[path[0]], path[1:], value)
    return copy


@st.composite
def mutated_json(draw: st.DrawFn, obj: dict[str, Any]) -> Any:
    """Replace, drop or corrupt one member anywhere in a toJSON() dict."""
    path = draw(st.sampled_from(_paths(obj)))
    op = draw(st.sampled_from(["replace", "drop", "b64", "add"]))
    if op == "drop" and path:
        parent = _get(obj, path[:-1])
        smaller = {k: v for k, v in parent.items() if k != path[-1]}
        return _replace(obj, path[:-1], smaller)
    if op == "b64":
        current = _get(obj, path)
        if isinstance(current, str) and current:
            raw = bytearray(base64.urlsafe_b64decode(current + "=" * (-len(current) % 4)))
            if raw:
                edited = draw(mutated(bytes(raw)))
                return _replace(obj, path, protocol.b64url_encode(edited))
    if op == "add":
        target = _get(obj, path)
        if isinstance(target, dict):
            key = draw(st.text(max_size=10))
            return _replace(obj, path, {**target, key: draw(json_values)})
    return _replace(obj, path, draw(json_values))


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


# ----------------------------------------------------------------- random input


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data):
    for parser in (
        protocol.parse_authenticator_data,
        protocol.parse_attestation_object,
        protocol.parse_client_data,
        protocol.ed25519_public_key_from_cose,
        protocol.parse_registration_json,
        protocol.parse_authentication_json,
    ):
        _only_malformed(parser, data)


@SETTINGS
@given(st.text(max_size=200))
def test_random_text(text):
    _only_malformed(protocol.b64url_decode, text)
    _only_malformed(protocol.parse_registration_json, text)
    _only_malformed(protocol.parse_authentication_json, text)


@SETTINGS
@given(cbor_values)
def test_random_cbor_objects(obj):
    _only_malformed(DevicebioExtension.from_cbor_obj, obj)
    _only_malformed(LivenessClaim.from_cbor_obj, obj)
    _only_malformed(protocol.ed25519_public_key_from_cose, obj if isinstance(obj, dict) else {})
    try:
        encoded = cbor2.dumps(obj)
    except Exception:
        return
    _only_malformed(protocol.parse_attestation_object, encoded)
    # As the extension inside otherwise well-formed authenticator data.
    raw = hashlib.sha256(RP.encode()).digest() + bytes([F.UP | F.UV | F.ED]) + b"\0\0\0\1"
    ad = _only_malformed(protocol.parse_authenticator_data, raw + encoded)
    if ad is not None:
        _only_malformed(protocol.devicebio_extension_of, ad)


@SETTINGS
@given(json_values)
def test_random_json(obj):
    _only_malformed(protocol.parse_registration_json, obj)
    _only_malformed(protocol.parse_authentication_json, obj)
    _only_malformed(protocol.parse_client_data, json.dumps(obj).encode())


# ----------------------------------------------------------------- mutated real input


@SETTINGS
@given(st.data())
def test_mutated_binary_forms(sample, data):
    reg, assertion = sample["reg"], sample["assertion"]
    att = data.draw(mutated(reg.attestation_object))
    _only_malformed(protocol.parse_attestation_object, att)
    ad = data.draw(mutated(assertion.authenticator_data))
    parsed = _only_malformed(protocol.parse_authenticator_data, ad)
    if parsed is not None:
        assert bytes(parsed) == ad  # a parse is always of the exact received bytes
        _only_malformed(protocol.devicebio_extension_of, parsed)
    cd = data.draw(mutated(assertion.client_data_json))
    parsed_cd = _only_malformed(protocol.parse_client_data, cd)
    if parsed_cd is not None:
        assert bytes(parsed_cd) == cd


@SETTINGS
@given(st.data())
def test_mutated_json_forms(sample, data):
    _only_malformed(
        protocol.parse_registration_json, data.draw(mutated_json(sample["reg"].to_json()))
    )
    _only_malformed(
        protocol.parse_authentication_json, data.draw(mutated_json(sample["assertion"].to_json()))
    )


@SETTINGS
@given(st.data())
def test_mutated_extension_objects(data):
    obj = FACE.extension(device_id=b"\x01" * 16).to_cbor_obj()
    key = data.draw(st.sampled_from([*obj, "l.k", "l.p", "l.f", "l.h", "new"]))
    value = data.draw(cbor_values)
    if key.startswith("l."):
        obj["l"] = {**obj["l"], key[2:]: value}
    else:
        obj[key] = value
    _only_malformed(DevicebioExtension.from_cbor_obj, obj)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_verifier_raises_only_verifier_errors(sample, data):
    reg, assertion = sample["reg"], sample["assertion"]
    store = SQLiteStore()
    store.insert_challenge(CHALLENGE, "alice", Purpose.REGISTER.value, 1e12)
    # A mutation of unsigned decoration may still register; anything else is refused.
    with contextlib.suppress(VerifierError):
        verify_registration(
            credential=data.draw(mutated_json(reg.to_json())),
            expected_challenge=CHALLENGE,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
            user="alice",
        )
    store = SQLiteStore()
    store.insert_challenge(CHALLENGE, "alice", Purpose.REGISTER.value, 1e12)
    record = verify_registration(
        credential=reg.to_json(),
        expected_challenge=CHALLENGE,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        user="alice",
    ).record
    store = SQLiteStore()
    store.add_credential(record)
    store.insert_challenge(CHALLENGE, "alice", Purpose.AUTHENTICATE.value, 1e12)
    forged = data.draw(mutated_json(assertion.to_json()))
    try:
        result = verify_assertion(
            credential=forged,
            expected_challenge=CHALLENGE,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
        )
    except VerifierError:
        return
    # Only unsigned decoration may change and still verify.
    assert isinstance(result, VerifiedAssertion)
    assert protocol.parse_authentication_json(forged).authenticator_data == (
        assertion.authenticator_data
    )


# ----------------------------------------------------------------- round trips


valid_liveness = st.one_of(
    st.just(LivenessClaim.none()),
    st.builds(
        LivenessClaim,
        kind=st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True).filter(
            lambda k: k != "none"
        ),
        passed=st.booleans(),
        sequence_hash=st.one_of(st.none(), st.binary(min_size=16, max_size=64)),
        frames=st.integers(0, 100_000),
    ),
)


@SETTINGS
@given(
    method=st.sampled_from(list(Method)),
    liveness=valid_liveness,
    model=st.one_of(st.none(), st.from_regex(r"[\x21-\x7e][\x20-\x7e]{0,60}", fullmatch=True)),
    device_id=st.one_of(st.none(), st.binary(min_size=16, max_size=16)),
)
def test_extension_round_trip(method, liveness, model, device_id):
    assume(method is Method.FACE or liveness.kind == "none")
    ext = DevicebioExtension(
        method=method, liveness=liveness, model=model, assurance="strong", device_id=device_id
    )
    encoded = cbor.encode(ext.to_extensions())
    raw = hashlib.sha256(RP.encode()).digest() + bytes([F.UP | F.ED]) + b"\0\0\0\7" + encoded
    parsed = protocol.parse_authenticator_data(raw)
    assert protocol.devicebio_extension_of(parsed) == ext


@SETTINGS
@given(st.binary(max_size=200))
def test_b64url_round_trip(data):
    text = protocol.b64url_encode(data)
    assert "=" not in text and protocol.b64url_decode(text) == data


# ----------------------------------------------------------------- strictness, case by case


def _ad(extension_cbor: bytes, flags: int = F.UP | F.UV | F.ED) -> bytes:
    return hashlib.sha256(RP.encode()).digest() + bytes([flags]) + b"\0\0\0\1" + extension_cbor


@pytest.mark.parametrize(
    ("label", "raw"),
    [
        ("non-minimal int", _ad(bytes.fromhex("a1") + cbor.encode("v") + bytes.fromhex("1801"))),
        ("null", _ad(bytes.fromhex("a1") + cbor.encode("v") + bytes.fromhex("f6"))),
        ("float", _ad(bytes.fromhex("a1") + cbor.encode("v") + bytes.fromhex("f93c00"))),
        ("tag", _ad(bytes.fromhex("a1") + cbor.encode("v") + bytes.fromhex("c101"))),
        ("indefinite map", _ad(bytes.fromhex("bf") + cbor.encode("v") + b"\x01\xff")),
        ("duplicate key", _ad(bytes.fromhex("a2") + (cbor.encode("v") + b"\x01") * 2)),
        (
            "unsorted keys",
            _ad(bytes.fromhex("a2") + cbor.encode("zz") + b"\x01" + cbor.encode("a") + b"\x01"),
        ),
        ("truncated string", _ad(bytes.fromhex("a1") + cbor.encode("v") + bytes.fromhex("45ab"))),
        ("trailing bytes", _ad(cbor.encode({"v": 1}) + b"\x00")),
        ("ED without data", _ad(b"")),
        ("data without ED", _ad(cbor.encode({"v": 1}), flags=F.UP)),
        ("short", b"\x00" * 36),
    ],
)
def test_non_canonical_authenticator_data_is_refused(label, raw):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_authenticator_data(raw)
    assert info.value.reason is ProtocolReason.MALFORMED_DATA, label


@pytest.mark.parametrize(
    "text",
    ["AA==", "A", "AB", "a+b/", "AAA ", "AAF", "Zg=", "\u00e9"],  # AB / AAF: non-zero pad bits
)
def test_non_canonical_base64url_is_refused(text):
    with pytest.raises(ProtocolError) as info:
        protocol.b64url_decode(text)
    assert info.value.reason is ProtocolReason.MALFORMED_DATA


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"webauthn.get","type":"webauthn.get","challenge":"AA","origin":"o"}',
        b'{"type":"webauthn.get","challenge":"AA","origin":"o","crossOrigin":"no"}',
        b'{"type":"webauthn.get","challenge":"AA=","origin":"o"}',
        b'{"type":"webauthn.get","challenge":"AA","origin":"o","topOrigin":"x"}',
        b'{"type":"webauthn.get","challenge":"AA","origin":NaN}',
        b'{"type":"webauthn.get","challenge":"AA","origin":"\xff"}',
        b'["webauthn.get"]',
        b'{"type":"webauthn.get","challenge":"AA"}',
    ],
)
def test_strict_client_data(raw):
    with pytest.raises(ProtocolError) as info:
        protocol.parse_client_data(raw)
    assert info.value.reason is ProtocolReason.MALFORMED_DATA


def test_extension_never_carries_a_score_template_or_image():
    obj = FACE.extension().to_cbor_obj()
    for extra in ("score", "template", "image", "embedding"):
        with pytest.raises(ProtocolError) as info:
            DevicebioExtension.from_cbor_obj({**obj, extra: b"\x00"})
        assert info.value.reason is ProtocolReason.MALFORMED_DATA
    assert set(obj) <= {"v", "m", "l", "md", "a", "d", "s"}


def test_liveness_kind_none_cannot_pass():
    with pytest.raises(ProtocolError) as info:
        LivenessClaim("none", True)
    assert info.value.reason is ProtocolReason.INVALID_ARGUMENT
    obj = {"k": "none", "p": True, "f": 0}
    with pytest.raises(ProtocolError) as info:
        LivenessClaim.from_cbor_obj(obj)
    assert info.value.reason is ProtocolReason.MALFORMED_DATA


def test_bool_is_not_an_int_and_int_is_not_a_bool():
    obj = FACE.extension().to_cbor_obj()
    for bad in (
        {**obj, "v": True},
        {**obj, "l": {**obj["l"], "p": 1}},
        {**obj, "l": {**obj["l"], "f": False}},
    ):
        with pytest.raises(ProtocolError):
            DevicebioExtension.from_cbor_obj(bad)


# ----------------------------------------------------------------- versioned test vector

VECTOR = Path(__file__).parent.parent / "vectors" / "webauthn-v1.json"


def test_versioned_vector_still_parses_but_its_unbound_face_claims_are_refused():
    """v1 bytes still parse and their signatures still verify (python-fido2 too, below), but
    the v1 device signed passed liveness claims bound to no challenge's plan (a fixed hash):
    the verifier now refuses those whatever its policy (issue 10 #9), so its face
    registration is refused with LIVENESS_MISMATCH; the PIN assertion of the same
    credential still verifies once the credential is on file."""
    vec = json.loads(VECTOR.read_text())
    assert vec["format_version"] == 1
    store = SQLiteStore()
    reg_challenge = bytes.fromhex(vec["registration"]["challenge_hex"])
    store.insert_challenge(reg_challenge, vec["user"], Purpose.REGISTER.value, 1e12)
    with pytest.raises(VerifierError) as info:
        verify_registration(
            credential=vec["registration"]["credential"],
            expected_challenge=reg_challenge,
            expected_origin=vec["origin"],
            expected_rp_id=vec["rp_id"],
            store=store,
            user=vec["user"],
        )
    assert info.value.reason is VReason.LIVENESS_MISMATCH
    store.add_credential(_v1_record(vec))
    for case in vec["assertions"]:
        challenge = bytes.fromhex(case["challenge_hex"])
        store.insert_challenge(challenge, vec["user"], Purpose.AUTHENTICATE.value, 1e12)
        args = {
            "credential": case["credential"],
            "expected_challenge": challenge,
            "expected_origin": vec["origin"],
            "expected_rp_id": vec["rp_id"],
            "store": store,
        }
        if case["expect"]["liveness_passed"]:
            with pytest.raises(VerifierError) as info:
                verify_assertion(**args)
            assert info.value.reason is VReason.LIVENESS_MISMATCH
            continue
        result = verify_assertion(**args)
        assert result.method.value == case["expect"]["method"] == "pin"
        ad = protocol.parse_authentication_json(case["credential"]).authenticator_data
        assert set(ad.extensions) == {"devicebio"}
        assert set(ad.extensions["devicebio"]) <= {"v", "m", "l", "md", "a", "d", "s"}


def _v1_record(vec: dict) -> CredentialRecord:
    """The v1 vector's credential as an RP that registered it under v1 rules holds it."""
    reg = protocol.parse_registration_json(vec["registration"]["credential"])
    data = reg.attestation.auth_data.credential_data
    return CredentialRecord(
        credential_id=reg.credential_id,
        user=vec["user"],
        user_handle=protocol.b64url_decode(vec["user_handle_b64url"]),
        rp_id=vec["rp_id"],
        public_key=cbor.encode(dict(data.public_key)),
        sign_count=0,
        device_id=reg.extension.device_id if reg.extension else None,
        created_at=1.0,
    )


def test_importing_verifier_pulls_in_no_vision_stack():
    import subprocess
    import sys

    code = (
        "import sys, verifier, devicebio.protocol; "
        "heavy = [m for m in ('numpy', 'cv2', 'onnxruntime') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_versioned_vector_verifies_with_python_fido2():
    from fido2.server import Fido2Server
    from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

    vec = json.loads(VECTOR.read_text())
    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=vec["rp_id"]))
    user = PublicKeyCredentialUserEntity(
        id=protocol.b64url_decode(vec["user_handle_b64url"]), name="a"
    )
    _, state = server.register_begin(
        user, challenge=bytes.fromhex(vec["registration"]["challenge_hex"])
    )
    credential = server.register_complete(state, vec["registration"]["credential"]).credential_data
    assert credential is not None
    for case in vec["assertions"]:
        _, state = server.authenticate_begin(
            [credential], challenge=bytes.fromhex(case["challenge_hex"])
        )
        assert server.authenticate_complete(state, [credential], case["credential"]) == credential


_CBOR_LEAF = st.one_of(st.integers(-(2**64), 2**64 - 1), st.booleans(), st.text(), st.binary())
_TEXT_KEYED = st.recursive(
    _CBOR_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=30), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(_TEXT_KEYED)
def test_fast_canonical_cbor_equals_fido2_encoding_for_text_keyed_values(obj: object) -> None:
    # parse_authenticator_data's fast canonical check relies on this equality.
    assert cbor2.dumps(obj, canonical=True) == cbor.encode(obj)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.integers(-300, 300), st.binary(max_size=3)),
        st.integers(-(2**32), 2**32),
        min_size=2,
        max_size=5,
    )
)
def test_authenticator_data_with_non_text_keys_needs_fido2_canonical_order(
    ext: dict[object, int],
) -> None:
    header = b"\x11" * 32 + bytes([0x85]) + (1).to_bytes(4, "big")
    good = header + cbor.encode(ext)
    assert bytes(protocol.parse_authenticator_data(good)) == good
    other = header + cbor2.dumps(ext, canonical=True)
    if other != good:
        with pytest.raises(ProtocolError):
            protocol.parse_authenticator_data(other)
