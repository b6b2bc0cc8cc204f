from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from devicebio.errors import DeviceBioError
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


# -- atomic(): one write transaction per verification ------------------------------------


def _commits(store: SQLiteStore) -> list[int]:
    """Count the durable commits ``store`` makes from now on: COMMITs, plus writes outside
    any BEGIN (each its own autocommit). Reads the store's private connection: test only."""
    state = {"in_txn": False}
    count = [0]

    def trace(sql: str) -> None:
        words = sql.split()
        head, second = words[0].upper(), (words[1].upper() if len(words) > 1 else "")
        if head == "BEGIN":
            state["in_txn"] = True
        elif head == "COMMIT":
            state["in_txn"] = False
            count[0] += 1
        elif head == "ROLLBACK" and second != "TO":
            state["in_txn"] = False
        elif head in ("INSERT", "UPDATE", "DELETE") and not state["in_txn"]:
            count[0] += 1

    store._conn.set_trace_callback(trace)
    return count


def _verification_writes(s: SQLiteStore, challenge: bytes) -> None:
    """What verify_assertion writes: burn the challenge, raise the counter, audit."""
    assert s.use_challenge(challenge) is not None
    assert s.get_credential(b"cred-1") is not None
    assert s.update_sign_count(b"cred-1", 0, 1)
    s.audit("assertion_verified", credential_id="cred-1")


def test_atomic_makes_one_commit_instead_of_three(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "v.db") as s:
        s.add_credential(_cred())
        s.insert_challenge(b"a" * 32, "alice", "authenticate", 1e12)
        s.insert_challenge(b"b" * 32, "alice", "authenticate", 1e12)
        commits = _commits(s)
        _verification_writes(s, b"a" * 32)
        assert commits[0] == 3
        s.update_sign_count(b"cred-1", 1, 0)
        commits[0] = 0
        with s.atomic():
            _verification_writes(s, b"b" * 32)
        assert commits[0] == 1


def test_atomic_writes_are_invisible_until_the_block_ends(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with SQLiteStore(db) as s, SQLiteStore(db) as other:
        s.add_credential(_cred())
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with s.atomic():
            _verification_writes(s, b"c" * 32)
            # Another process sees the state before the block: nothing was committed yet.
            assert other.get_credential(b"cred-1").sign_count == 0  # type: ignore[union-attr]
            assert other.audit_events() == []
        assert other.get_credential(b"cred-1").sign_count == 1  # type: ignore[union-attr]
        assert other.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert [e[1] for e in other.audit_events()] == ["assertion_verified"]


@pytest.mark.parametrize("error", [VerifierError(Reason.BAD_SIGNATURE, "x"), RuntimeError("bug")])
def test_atomic_keeps_the_burned_challenge_when_the_block_raises(
    tmp_path: Path, error: Exception
) -> None:
    db = tmp_path / "v.db"
    with SQLiteStore(db) as s:
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with pytest.raises(type(error)), s.atomic():
            assert s.use_challenge(b"c" * 32) is not None
            s.audit("assertion_refused", reason="bad_signature")
            raise error
    # A refusal (or a bug) after the burn must not hand the challenge back.
    with SQLiteStore(db) as again:
        assert again.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert [e[1] for e in again.audit_events()] == ["assertion_refused"]


def test_atomic_nested_blocks_join_the_outer_transaction(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with SQLiteStore(db) as s, SQLiteStore(db) as other:
        commits = _commits(s)
        with s.atomic():
            s.audit("one")
            with s.atomic():
                s.audit("two")
            assert other.audit_events() == []
        assert commits[0] == 1
        assert [e[1] for e in other.audit_events()] == ["one", "two"]


def test_failed_call_inside_atomic_undoes_only_itself(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "v.db") as s:
        s.set_revocation_state(5, b"five")
        with s.atomic():
            s.audit("before")
            with pytest.raises(VerifierError) as e:
                s.set_revocation_state(3, b"three")
            assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
            s.audit("after")
        assert s.get_revocation_state() == (5, b"five")
        assert [ev[1] for ev in s.audit_events()] == ["before", "after"]


def test_atomic_holds_the_write_lock_against_other_connections(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    with SQLiteStore(db) as s, SQLiteStore(db, timeout=0.2) as other:
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with s.atomic():
            assert s.use_challenge(b"c" * 32) is not None
            # A racing verifier cannot redeem (or even wait its turn) until we commit.
            with pytest.raises(VerifierError) as e:
                other.use_challenge(b"c" * 32)
            assert e.value.reason is Reason.STORAGE
        assert other.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)


def test_atomic_serialises_threads_sharing_one_store() -> None:
    s = SQLiteStore()
    s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
    seen: list[object] = []
    inside = threading.Event()

    def other_thread() -> None:
        inside.wait()
        seen.append(s.use_challenge(b"c" * 32))

    t = threading.Thread(target=other_thread)
    t.start()
    with s.atomic():
        inside.set()
        t.join(0.2)
        assert t.is_alive() and seen == []  # blocked on the store's lock, not joined in
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, False)
    t.join()
    assert seen == [("alice", "authenticate", 1e12, True)]


# -- durability ---------------------------------------------------------------------------


@pytest.mark.parametrize(("durability", "level"), [("full", 2), ("normal", 1)])
def test_durability_sets_synchronous(tmp_path: Path, durability: str, level: int) -> None:
    with SQLiteStore(tmp_path / "v.db", durability=durability) as s:  # type: ignore[arg-type]
        assert s.durability == durability
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_durability_is_full(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "v.db") as s:
        assert s.durability == "full"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


@pytest.mark.parametrize("bad", ["off", "FULL", "", None, 2])
def test_unknown_durability_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(VerifierError) as e:
        SQLiteStore(tmp_path / "v.db", durability=bad)  # type: ignore[arg-type]
    assert e.value.reason is Reason.MALFORMED


def _burn_and_die(args: tuple[str, str]) -> None:
    db, durability = args
    s = SQLiteStore(db, durability=durability)  # type: ignore[arg-type]
    with s.atomic():
        s.use_challenge(b"c" * 32)
        s.update_sign_count(b"cred-1", 0, 7)
    # Crash without closing: no checkpoint, no clean shutdown, the WAL stays behind.
    os._exit(0)


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_committed_state_survives_a_process_crash(tmp_path: Path, durability: str) -> None:
    db = str(tmp_path / "v.db")
    with SQLiteStore(db) as s:
        s.add_credential(_cred())
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
    proc = multiprocessing.get_context("fork").Process(
        target=_burn_and_die, args=((db, durability),)
    )
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    with SQLiteStore(db) as s:
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert s.get_credential(b"cred-1").sign_count == 7  # type: ignore[union-attr]


def test_memory_store_accepts_either_durability() -> None:
    for durability in ("full", "normal"):
        with SQLiteStore(durability=durability) as s:  # type: ignore[arg-type]
            s.insert_challenge(b"c" * 32, "alice", "authenticate", 1.0)
            assert s.use_challenge(b"c" * 32) is not None


# -- challenges in one statement ----------------------------------------------------------


def test_use_challenge_distinguishes_unknown_used_and_fresh_inside_atomic() -> None:
    s = SQLiteStore()
    s.insert_challenge(b"c" * 32, "alice", "authenticate", 5.0)
    with s.atomic():
        assert s.use_challenge(b"x" * 32) is None
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 5.0, False)
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 5.0, True)


# -- the decoded credential key -----------------------------------------------------------


def test_record_ed25519_key_is_decoded_and_cached() -> None:
    x = bytes(range(32))
    cose = b"\xa4\x01\x01\x03\x27\x20\x06\x21\x58\x20" + x
    rec = dataclasses.replace(_cred(), public_key=cose)
    assert rec.ed25519_public_key == x
    # The cache is keyed by the exact bytes: another key never comes back for them.
    other = dataclasses.replace(rec, public_key=cose[:-1] + b"\xff")
    assert other.ed25519_public_key == x[:-1] + b"\xff"
    assert rec.ed25519_public_key == x


def test_record_ed25519_key_refuses_a_damaged_key_every_time() -> None:
    rec = _cred()  # its COSE_Key has no curve and no x
    for _ in range(2):
        with pytest.raises(DeviceBioError):
            _ = rec.ed25519_public_key
