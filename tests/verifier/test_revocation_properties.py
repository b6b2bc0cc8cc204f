"""Hostile bytes in, only VerifierError (or a genuinely valid list) out."""

from __future__ import annotations

from typing import Any

import cbor2
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.errors import Reason, VerifierError
from verifier.revocation import (
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    parse_revocation_list,
    sign_revocation_list,
)

KEY = nacl.signing.SigningKey(b"\x33" * 32)
VK = KEY.verify_key
T0 = 1_700_000_000
VALID = sign_revocation_list(
    RevocationList(
        issuer="rp.example",
        serial=7,
        this_update=T0,
        next_update=T0 + 86_400,
        entries=(
            RevocationEntry(EntryKind.CREDENTIAL_ID, b"\x01" * 16, RevocationReason.REVOKED, T0),
            RevocationEntry(
                EntryKind.DEVICE_KEY, b"\x02" * 32, RevocationReason.USER_REQUESTED, T0
            ),
            RevocationEntry(
                EntryKind.MODEL_ID, "m1", RevocationReason.USER_VERIFICATION_BYPASS, T0
            ),
            RevocationEntry(
                EntryKind.SDK_VERSION, "0.1.0", RevocationReason.ATTESTATION_KEY_COMPROMISE, T0
            ),
        ),
    ),
    KEY,
)
VALID_PAYLOAD: bytes = cbor2.loads(VALID).value[2]

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_only_typed(data: bytes) -> RevocationList | None:
    try:
        return parse_revocation_list(data, VK)
    except VerifierError as e:
        assert e.reason in (Reason.MALFORMED, Reason.REVOCATION_LIST_BAD_SIGNATURE)
        return None


def _resign(payload: bytes) -> bytes:
    """Wrap arbitrary payload bytes in a correctly signed COSE_Sign1, so the fuzz reaches
    the payload parser instead of stopping at the signature."""
    protected = b"\xa1\x01\x27"
    sig = KEY.sign(cbor2.dumps(["Signature1", protected, b"", payload])).signature
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]), canonical=True)


@st.composite
def _mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert", "delete"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 4))]
    return bytes(data)


def test_valid_list_parses() -> None:
    assert parse_revocation_list(VALID, VK).serial == 7


@SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes_only_typed_errors(data: bytes) -> None:
    assert _parse_only_typed(data) is None


@SETTINGS
@given(_mutated(VALID))
def test_mutated_list_only_typed_errors(data: bytes) -> None:
    rl = _parse_only_typed(data)
    if rl is not None:
        # Anything the mutation left acceptable must be the one canonical, signed encoding.
        assert data == VALID or sign_revocation_list(rl, KEY) == data


@SETTINGS
@given(_mutated(VALID_PAYLOAD))
def test_mutated_payload_with_valid_signature_only_malformed(payload: bytes) -> None:
    data = _resign(payload)
    try:
        rl = parse_revocation_list(data, VK)
    except VerifierError as e:
        assert e.reason is Reason.MALFORMED
        return
    assert sign_revocation_list(rl, KEY) == data


_cbor_leaf = (
    st.integers(min_value=-(2**70), max_value=2**70)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from(list(EntryKind) + list(RevocationReason)).map(str)
)
_cbor_any = st.recursive(
    _cbor_leaf,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.integers(0, 8) | st.text(max_size=2), kids, max_size=7)
    ),
    max_leaves=20,
)


@SETTINGS
@given(_cbor_any)
def test_signed_arbitrary_cbor_payload_only_malformed(obj: Any) -> None:
    # The strategy only draws what cbor2 encodes: an encoding error here is a bug in the
    # strategy and must show, not skip the whole test.
    payload = cbor2.dumps(obj, canonical=True)
    with pytest.raises(VerifierError) as e:
        parse_revocation_list(_resign(payload), VK)
    assert e.value.reason is Reason.MALFORMED


_VALID_FIELDS: dict[int, Any] = cbor2.loads(VALID_PAYLOAD)


@st.composite
def _near_valid_map(draw: st.DrawFn) -> dict[int, Any]:
    """The valid list's payload map with up to three edits: a key dropped, key 7 (not one of
    the list's) added, or a value replaced by arbitrary CBOR. With no edit, or an edit that
    happens to keep a valid value, it parses; so the per-field checks, the exact key set and
    the accepting branch are all exercised."""
    fields = dict(_VALID_FIELDS)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.integers(1, 7))
        action = draw(st.sampled_from(["drop", "replace"]))
        if action == "drop":
            fields.pop(key, None)
        else:
            fields[key] = draw(_cbor_any)
    return fields


@SETTINGS
@given(_near_valid_map())
def test_near_valid_payload_maps_only_malformed(fields: dict[int, Any]) -> None:
    payload = cbor2.dumps(fields, canonical=True)
    data = _resign(payload)
    try:
        rl = parse_revocation_list(data, VK)
    except VerifierError as e:
        assert e.reason is Reason.MALFORMED
        return
    # Accepted: then it has exactly the list's keys and is the one canonical encoding of what
    # was parsed (an ignored extra key or a value coerced on the way in fails here).
    assert set(fields) == set(_VALID_FIELDS)
    assert sign_revocation_list(rl, KEY) == data
