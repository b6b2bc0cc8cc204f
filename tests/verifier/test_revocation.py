from __future__ import annotations

from typing import Any

import cbor2
import nacl.signing
import pytest

from verifier.errors import Reason, VerifierError
from verifier.revocation import (
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    check_not_revoked,
    install_revocation_list,
    parse_revocation_list,
    revocation_list_to_json,
    sign_revocation_list,
)
from verifier.store import SQLiteStore

T0 = 1_700_000_000
DAY = 86_400
KEY = nacl.signing.SigningKey(b"\x11" * 32)
OTHER = nacl.signing.SigningKey(b"\x22" * 32)
VK = KEY.verify_key

ENTRIES = (
    RevocationEntry(EntryKind.CREDENTIAL_ID, b"cred-revoked", RevocationReason.USER_REQUESTED, T0),
    RevocationEntry(
        EntryKind.DEVICE_KEY, b"\xde\xad" * 8, RevocationReason.USER_KEY_PHYSICAL_COMPROMISE, T0
    ),
    RevocationEntry(
        EntryKind.MODEL_ID, "arcface-r50@sha256:bad", RevocationReason.USER_VERIFICATION_BYPASS, T0
    ),
    RevocationEntry(
        EntryKind.SDK_VERSION, "0.0.9", RevocationReason.USER_KEY_REMOTE_COMPROMISE, T0
    ),
)


def _rl(
    serial: int = 1, entries: tuple[RevocationEntry, ...] = ENTRIES, **kw: Any
) -> RevocationList:
    args: dict[str, Any] = {
        "issuer": "rp.example",
        "serial": serial,
        "this_update": T0,
        "next_update": T0 + 7 * DAY,
        "entries": entries,
    }
    args.update(kw)
    return RevocationList(**args)


def _cose(
    payload: bytes,
    key: nacl.signing.SigningKey = KEY,
    *,
    protected: bytes = b"\xa1\x01\x27",
    unprotected: dict[int, Any] | None = None,
    tag: int = 18,
) -> bytes:
    """An independent COSE_Sign1 builder (RFC 9052 4.4) around arbitrary payload bytes."""
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    sig = key.sign(sig_structure).signature
    return cbor2.dumps(
        cbor2.CBORTag(tag, [protected, unprotected or {}, payload, sig]), canonical=True
    )


def _payload(override: dict[Any, Any] | None = None) -> dict[Any, Any]:
    p: dict[Any, Any] = {
        1: 1,
        2: "rp.example",
        3: 1,
        4: T0,
        5: T0 + DAY,
        6: [{1: "credential_id", 2: b"abc", 3: "revoked", 4: T0}],
    }
    p.update(override or {})
    return p


def _malformed(data: bytes) -> None:
    with pytest.raises(VerifierError) as e:
        parse_revocation_list(data, VK)
    assert e.value.reason is Reason.MALFORMED, e.value


# -- format -----------------------------------------------------------------------------


def test_sign_parse_roundtrip() -> None:
    rl = _rl()
    data = sign_revocation_list(rl, KEY)
    assert parse_revocation_list(data, VK) == rl


def test_encoding_is_cose_sign1_per_rfc9052() -> None:
    data = sign_revocation_list(_rl(), KEY)
    obj = cbor2.loads(data)
    assert isinstance(obj, cbor2.CBORTag) and obj.tag == 18
    protected, unprotected, payload, sig = obj.value
    assert cbor2.loads(protected) == {1: -8}
    assert dict(unprotected) == {}
    # Verify with nacl directly over a Sig_structure built here, not by the module.
    VK.verify(cbor2.dumps(["Signature1", protected, b"", payload]), sig)
    body = cbor2.loads(payload)
    assert body[1] == 1 and body[2] == "rp.example" and body[3] == 1
    assert payload == cbor2.dumps(body, canonical=True)
    assert data == _cose(payload)  # deterministic: Ed25519 and canonical CBOR


def test_kid_in_unprotected_header() -> None:
    data = sign_revocation_list(_rl(), KEY, kid=b"key-1")
    assert dict(cbor2.loads(data).value[1]) == {4: b"key-1"}
    assert parse_revocation_list(data, VK) == _rl()


def test_independently_built_list_parses() -> None:
    rl = parse_revocation_list(_cose(cbor2.dumps(_payload(), canonical=True)), VK)
    assert rl.entries == (
        RevocationEntry(EntryKind.CREDENTIAL_ID, b"abc", RevocationReason.REVOKED, T0),
    )


def test_bad_signature() -> None:
    data = bytearray(sign_revocation_list(_rl(), KEY))
    data[-1] ^= 1
    with pytest.raises(VerifierError) as e:
        parse_revocation_list(bytes(data), VK)
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE


def test_wrong_key() -> None:
    with pytest.raises(VerifierError) as e:
        parse_revocation_list(sign_revocation_list(_rl(), OTHER), VK)
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE


def test_payload_changed_after_signing() -> None:
    obj = cbor2.loads(sign_revocation_list(_rl(), KEY))
    p, u, _payload_bytes, sig = obj.value
    forged = cbor2.dumps(_payload(), canonical=True)
    data = cbor2.dumps(cbor2.CBORTag(18, [p, u, forged, sig]), canonical=True)
    with pytest.raises(VerifierError) as e:
        parse_revocation_list(data, VK)
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE


@pytest.mark.parametrize(
    "override",
    [
        {1: 2},  # unknown format version
        {3: -1},
        {3: 2**63},  # beyond the uint range we store
        {3: 2**70},  # bignum tag
        {3: True},
        {3: 1.0},
        {2: ""},
        {2: b"rp"},
        {5: T0},  # next_update not after this_update
        {6: {}},
        {6: [{1: "credential_id", 2: "text-not-bytes", 3: "revoked", 4: T0}]},
        {6: [{1: "model_id", 2: b"bytes-not-text", 3: "revoked", 4: T0}]},
        {6: [{1: "credential_id", 2: b"", 3: "revoked", 4: T0}]},
        {6: [{1: "credential_id", 2: b"x" * 1024, 3: "revoked", 4: T0}]},
        {6: [{1: "nonsense", 2: b"abc", 3: "revoked", 4: T0}]},
        {6: [{1: "credential_id", 2: b"abc", 3: "stolen", 4: T0}]},
        {6: [{1: "credential_id", 2: b"abc", 3: "revoked"}]},
        {6: [{1: "credential_id", 2: b"abc", 3: "revoked", 4: T0, 5: 0}]},
        {6: [{1: "credential_id", 2: b"a", 3: "revoked", 4: T0}] * 2},  # duplicate entry
        {7: "extra"},
        {"1": 1},
    ],
)
def test_signed_but_invalid_payload_is_malformed(override: dict[Any, Any]) -> None:
    _malformed(_cose(cbor2.dumps(_payload(override), canonical=True)))


def test_missing_payload_key_is_malformed() -> None:
    p = _payload()
    del p[5]
    _malformed(_cose(cbor2.dumps(p, canonical=True)))


def test_non_canonical_payload_is_malformed() -> None:
    # Same map, keys in reverse order: valid CBOR, valid signature, but not canonical.
    p = _payload()
    enc = cbor2.dumps(dict(reversed(list(p.items()))))
    assert enc != cbor2.dumps(p, canonical=True)
    _malformed(_cose(enc))


def test_envelope_variants_are_malformed() -> None:
    payload = cbor2.dumps(_payload(), canonical=True)
    _malformed(_cose(payload, tag=17))  # COSE_Mac0
    _malformed(_cose(payload, tag=98))  # COSE_Sign
    _malformed(_cose(payload, protected=cbor2.dumps({1: -7})))  # ES256
    _malformed(_cose(payload, protected=b""))
    _malformed(_cose(payload, unprotected={1: -8}))
    _malformed(cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, None, b"\x00" * 64])))
    _malformed(cbor2.dumps([b"\xa1\x01\x27", {}, payload, b"\x00" * 64]))
    _malformed(cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, payload, b"\x00" * 63])))
    _malformed(_cose(payload) + b"\x00")
    _malformed(b"")
    _malformed(b"\xff")
    _malformed("not bytes")  # type: ignore[arg-type]


def test_sign_refuses_invalid_list() -> None:
    for bad in (
        _rl(serial=-1),
        _rl(next_update=T0),
        _rl(entries=(ENTRIES[0], ENTRIES[0])),
        _rl(entries=(RevocationEntry(EntryKind.MODEL_ID, b"x", RevocationReason.REVOKED, 0),)),
        _rl(issuer=""),
    ):
        with pytest.raises(VerifierError) as e:
            sign_revocation_list(bad, KEY)
        assert e.value.reason is Reason.MALFORMED


def test_to_json() -> None:
    j = revocation_list_to_json(_rl())
    assert j["serial"] == 1 and j["format_version"] == 1
    assert j["next_update_utc"] == "2023-11-21T22:13:20Z"
    kinds = {e["kind"]: (e["value"], e["value_encoding"]) for e in j["entries"]}
    assert kinds["credential_id"] == ("Y3JlZC1yZXZva2Vk", "base64url")
    assert kinds["device_key"] == ("dead" * 8, "hex")
    assert kinds["model_id"] == ("arcface-r50@sha256:bad", "text")
    big = revocation_list_to_json(_rl(next_update=2**63 - 1))
    assert big["next_update_utc"] is None


# -- install / check --------------------------------------------------------------------


def _installed(serial: int = 1, **kw: Any) -> SQLiteStore:
    s = SQLiteStore()
    install_revocation_list(s, sign_revocation_list(_rl(serial, **kw), KEY), VK, now=T0)
    return s


def _check(s: SQLiteStore, **kw: Any) -> None:
    args: dict[str, Any] = {
        "credential_id": b"fine",
        "device_id": b"\x00" * 16,
        "model_id": "arcface-r50@sha256:good",
        "sdk_version": "1.0.0",
        "now": T0 + DAY,
    }
    args.update(kw)
    check_not_revoked(s, VK, **args)


def test_clean_credential_passes() -> None:
    _check(_installed())


@pytest.mark.parametrize(
    "kw",
    [
        {"credential_id": b"cred-revoked"},
        {"device_id": b"\xde\xad" * 8},
        {"model_id": "arcface-r50@sha256:bad"},
        {"sdk_version": "0.0.9"},
    ],
)
def test_each_entry_kind_revokes(kw: dict[str, Any]) -> None:
    with pytest.raises(VerifierError) as e:
        _check(_installed(), **kw)
    assert e.value.reason is Reason.REVOKED


def test_kinds_do_not_cross_match() -> None:
    # A credential id equal to a revoked device key is not revoked by that entry.
    _check(_installed(), credential_id=b"\xde\xad" * 8)


def test_none_identifiers_skip_their_kinds() -> None:
    _check(_installed(), device_id=None, model_id=None, sdk_version=None)


def test_install_returns_list_and_audits() -> None:
    s = SQLiteStore()
    rl = install_revocation_list(s, sign_revocation_list(_rl(), KEY), VK, now=T0)
    assert rl == _rl()
    assert s.get_revocation_state() is not None
    assert [e[1] for e in s.audit_events()] == ["revocation_list_installed"]


def test_newer_list_replaces_older() -> None:
    s = _installed(1)
    install_revocation_list(s, sign_revocation_list(_rl(2, entries=()), KEY), VK, now=T0)
    _check(s, credential_id=b"cred-revoked")  # entry gone in serial 2
    assert s.get_revocation_state()[0] == 2  # type: ignore[index]


def test_rollback_refused() -> None:
    s = _installed(5)
    with pytest.raises(VerifierError) as e:
        install_revocation_list(s, sign_revocation_list(_rl(4, entries=()), KEY), VK, now=T0)
    assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    with pytest.raises(VerifierError):
        _check(s, credential_id=b"cred-revoked")  # serial 5 still in force


def test_same_serial_identical_is_idempotent() -> None:
    s = _installed(3)
    install_revocation_list(s, sign_revocation_list(_rl(3), KEY), VK, now=T0)
    assert len(s.audit_events()) == 1


def test_same_serial_different_content_refused() -> None:
    s = _installed(3)
    with pytest.raises(VerifierError) as e:
        install_revocation_list(s, sign_revocation_list(_rl(3, entries=()), KEY), VK, now=T0)
    assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK


def test_install_wrong_key_refused() -> None:
    s = SQLiteStore()
    with pytest.raises(VerifierError) as e:
        install_revocation_list(s, sign_revocation_list(_rl(), OTHER), VK, now=T0)
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE
    assert s.get_revocation_state() is None


def test_install_stale_list_refused() -> None:
    s = SQLiteStore()
    with pytest.raises(VerifierError) as e:
        install_revocation_list(s, sign_revocation_list(_rl(), KEY), VK, now=T0 + 8 * DAY)
    assert e.value.reason is Reason.REVOCATION_LIST_STALE
    assert s.get_revocation_state() is None


def test_stale_list_fails_closed() -> None:
    s = _installed()
    _check(s, now=T0 + 7 * DAY)  # at next_update: still fresh
    with pytest.raises(VerifierError) as e:
        _check(s, now=T0 + 7 * DAY + 1)
    assert e.value.reason is Reason.REVOCATION_LIST_STALE


def test_missing_list_required_fails_closed() -> None:
    with pytest.raises(VerifierError) as e:
        _check(SQLiteStore())
    assert e.value.reason is Reason.REVOCATION_LIST_MISSING


def test_missing_list_not_required_passes() -> None:
    _check(SQLiteStore(), required=False)


def test_installed_list_enforced_even_when_not_required() -> None:
    with pytest.raises(VerifierError) as e:
        _check(_installed(), credential_id=b"cred-revoked", required=False)
    assert e.value.reason is Reason.REVOKED


def test_check_with_other_issuer_key_fails_closed() -> None:
    s = _installed()
    with pytest.raises(VerifierError) as e:
        check_not_revoked(
            s, OTHER.verify_key, credential_id=b"fine", device_id=None, model_id=None, now=T0
        )
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE


def test_tampered_store_fails_closed(tmp_path: Any) -> None:
    import sqlite3

    db = tmp_path / "v.db"
    s = SQLiteStore(db)
    install_revocation_list(s, sign_revocation_list(_rl(2), KEY), VK, now=T0)
    conn = sqlite3.connect(db)
    # An attacker with DB write access swaps in an older genuine list, keeping the serial...
    conn.execute("UPDATE revocation SET data = ?", (sign_revocation_list(_rl(1, entries=()), KEY),))
    conn.commit()
    with pytest.raises(VerifierError) as e:
        _check(s, credential_id=b"cred-revoked")
    assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    # ...or garbage.
    conn.execute("UPDATE revocation SET data = ?", (b"garbage",))
    conn.commit()
    conn.close()
    with pytest.raises(VerifierError) as e:
        _check(s)
    assert e.value.reason is Reason.MALFORMED
