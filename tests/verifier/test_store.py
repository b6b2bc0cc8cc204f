from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from verifier.errors import Reason, VerifierError
from verifier.store import SCHEMA_VERSION, CredentialRecord, SQLiteStore, Store


def _cred(cid: bytes = b"cred-1", user: str = "alice", count: int = 0) -> CredentialRecord:
    return CredentialRecord(
        credential_id=cid,
        user=user,
        user_handle=b"\x01" * 16,
        rp_id="example.com",
        public_key=b"\xa4\x01\x01\x03\x27",
        sign_count=count,
        device_id=b"\x02" * 16,
        created_at=1000.0,
    )


def test_sqlite_store_satisfies_protocol() -> None:
    assert isinstance(SQLiteStore(), Store)


def test_challenge_used_once() -> None:
    s = SQLiteStore()
    s.insert_challenge(b"c" * 32, "alice", "register", 123.0)
    assert s.use_challenge(b"c" * 32) == ("alice", "register", 123.0, False)
    assert s.use_challenge(b"c" * 32) == ("alice", "register", 123.0, True)
    assert s.use_challenge(b"x" * 32) is None


def test_duplicate_challenge_value_refused() -> None:
    s = SQLiteStore()
    s.insert_challenge(b"c" * 32, "alice", "register", 1.0)
    with pytest.raises(VerifierError) as e:
        s.insert_challenge(b"c" * 32, "bob", "register", 1.0)
    assert e.value.reason is Reason.STORAGE
    assert s.use_challenge(b"c" * 32) == ("alice", "register", 1.0, False)


def test_purge_expired_challenges() -> None:
    s = SQLiteStore()
    s.insert_challenge(b"a" * 32, "u", "register", 10.0)
    s.insert_challenge(b"b" * 32, "u", "register", 20.0)
    assert s.purge_expired_challenges(15.0) == 1
    assert s.use_challenge(b"a" * 32) is None
    assert s.use_challenge(b"b" * 32) is not None


def test_credentials_roundtrip_and_duplicate() -> None:
    s = SQLiteStore()
    rec = _cred()
    s.add_credential(rec)
    assert s.get_credential(rec.credential_id) == rec
    assert s.get_credential(b"other") is None
    with pytest.raises(VerifierError) as e:
        s.add_credential(_cred(user="mallory"))
    assert e.value.reason is Reason.CREDENTIAL_EXISTS
    s.add_credential(_cred(b"cred-2"))
    s.add_credential(_cred(b"cred-3", user="bob"))
    assert [r.credential_id for r in s.credentials_for_user("alice")] == [b"cred-1", b"cred-2"]
    assert s.credentials_for_user("carol") == []


def test_credential_without_device_id() -> None:
    s = SQLiteStore()
    rec = CredentialRecord(b"c", "u", b"h", "rp", b"k", 0, None, 1.0)
    s.add_credential(rec)
    assert s.get_credential(b"c") == rec


def test_sign_count_compare_and_set() -> None:
    s = SQLiteStore()
    s.add_credential(_cred(count=5))
    assert s.update_sign_count(b"cred-1", 5, 6)
    assert not s.update_sign_count(b"cred-1", 5, 7)  # stale "old": someone got there first
    assert s.get_credential(b"cred-1").sign_count == 6  # type: ignore[union-attr]
    assert not s.update_sign_count(b"unknown", 0, 1)


def test_sign_count_out_of_range_is_typed() -> None:
    s = SQLiteStore()
    s.add_credential(_cred())
    for bad in (-1, 2**63, True):
        with pytest.raises(VerifierError) as e:
            s.update_sign_count(b"cred-1", 0, bad)  # type: ignore[arg-type]
        assert e.value.reason is Reason.MALFORMED


def test_bad_argument_types_are_typed() -> None:
    s = SQLiteStore()
    with pytest.raises(VerifierError):
        s.insert_challenge("not bytes", "u", "p", 1.0)  # type: ignore[arg-type]
    with pytest.raises(VerifierError):
        s.insert_challenge(b"x" * 16, "\ud800", "p", 1.0)
    with pytest.raises(VerifierError):
        s.insert_challenge(b"x" * 16, "u", "p", float("nan"))
    with pytest.raises(VerifierError):
        s.audit("e", blob=b"bytes")  # type: ignore[arg-type]
    with pytest.raises(VerifierError):
        s.audit("e", x=float("inf"))


def test_revocation_state_monotonic() -> None:
    s = SQLiteStore()
    assert s.get_revocation_state() is None
    s.set_revocation_state(3, b"three")
    assert s.get_revocation_state() == (3, b"three")
    s.set_revocation_state(3, b"three")  # idempotent
    for serial, data in ((2, b"two"), (3, b"other")):
        with pytest.raises(VerifierError) as e:
            s.set_revocation_state(serial, data)
        assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    s.set_revocation_state(4, b"four")
    assert s.get_revocation_state() == (4, b"four")


def test_audit_records_fields() -> None:
    s = SQLiteStore()
    s.audit("registered", user="alice", count=1, ok=True, note=None)
    events = s.audit_events()
    assert len(events) == 1
    _, event, fields = events[0]
    assert event == "registered"
    assert fields == {"user": "alice", "count": 1, "ok": True, "note": None}


def test_file_store_persists_and_uses_wal(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with SQLiteStore(db) as s:
        s.add_credential(_cred())
    with SQLiteStore(db) as s:
        assert s.get_credential(b"cred-1") == _cred()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_schema_version_mismatch_refused(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(VerifierError) as e:
        SQLiteStore(db)
    assert e.value.reason is Reason.STORAGE


def test_foreign_database_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(VerifierError) as e:
        SQLiteStore(db)
    assert e.value.reason is Reason.STORAGE


def test_not_a_database_is_storage_error(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(VerifierError) as e:
        SQLiteStore(db)
    assert e.value.reason is Reason.STORAGE


def test_unopenable_path_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(VerifierError) as e:
        SQLiteStore(tmp_path / "missing-dir" / "v.db")
    assert e.value.reason is Reason.STORAGE


def test_two_connections_race_for_one_challenge(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    stores = [SQLiteStore(db) for _ in range(4)]
    values = [bytes([i]) * 32 for i in range(1, 21)]
    for v in values:
        stores[0].insert_challenge(v, "alice", "authenticate", 1e12)
    results: list[list[bool]] = [[] for _ in stores]
    barrier = threading.Barrier(len(stores))

    def worker(i: int) -> None:
        for v in values:
            barrier.wait()
            got = stores[i].use_challenge(v)
            assert got is not None
            results[i].append(not got[3])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(len(values)):
        assert sum(r[n] for r in results) == 1, "exactly one connection may win each challenge"


def _redeem_all(args: tuple[str, list[bytes]]) -> list[bool]:
    db, values = args
    with SQLiteStore(db) as s:
        out = []
        for v in values:
            got = s.use_challenge(v)
            out.append(got is not None and not got[3])
        return out


def test_processes_race_for_challenges(tmp_path: Path) -> None:
    db = str(tmp_path / "v.db")
    values = [i.to_bytes(2, "big") * 16 for i in range(40)]
    with SQLiteStore(db) as s:
        for v in values:
            s.insert_challenge(v, "alice", "authenticate", 1e12)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        wins = pool.map(_redeem_all, [(db, values)] * 3)
    for n in range(len(values)):
        assert sum(w[n] for w in wins) == 1


def test_counter_cas_race(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    a, b = SQLiteStore(db), SQLiteStore(db)
    a.add_credential(_cred(count=10))
    # Both read 10 and try to move on: only one may succeed.
    assert [a.update_sign_count(b"cred-1", 10, 11), b.update_sign_count(b"cred-1", 10, 12)] == [
        True,
        False,
    ]
    assert b.get_credential(b"cred-1").sign_count == 11  # type: ignore[union-attr]


def test_revocation_install_race_keeps_highest(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    a, b = SQLiteStore(db), SQLiteStore(db)
    # Both installers saw "no list yet"; A installs serial 5 first, then B's serial 3 must
    # not overwrite it even though B's own pre-check passed.
    assert a.get_revocation_state() is None and b.get_revocation_state() is None
    a.set_revocation_state(5, b"five")
    with pytest.raises(VerifierError) as e:
        b.set_revocation_state(3, b"three")
    assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    assert b.get_revocation_state() == (5, b"five")
