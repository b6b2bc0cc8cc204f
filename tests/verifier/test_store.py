from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from verifier.errors import Reason, VerifierError
from verifier.store import (
    SCHEMA_VERSION,
    CredentialRecord,
    PaymentRecord,
    SQLiteStore,
    Store,
    open_store,
)
from verifier.store.base import use_challenge_and_get_credential

# Every test taking ``backend`` runs against a SQLite file and a real PostgreSQL server (see
# tests/verifier/conftest.py); ``backend.open()`` is one more verifier process's store.


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


def _admin(backend: Any) -> Any:
    """A raw connection to the backend's database, bypassing the store (test only)."""
    if backend.name == "sqlite":
        return sqlite3.connect(backend.url.removeprefix("sqlite:///"), isolation_level=None)
    import psycopg

    return psycopg.connect(backend.url, autocommit=True)


def _protocol_methods() -> list[str]:
    return sorted(n for n, v in vars(Store).items() if callable(v) and not n.startswith("_"))


def test_store_satisfies_protocol(backend) -> None:
    # isinstance() against a runtime-checkable Protocol only sees that the names exist; the
    # verifier calls these methods with keywords, so each must also take the protocol's
    # parameters (names, kinds, defaults) or a call fails only when that path runs.
    store = backend.open()
    methods = _protocol_methods()
    assert len(methods) >= 10, methods
    for name in methods:
        want = inspect.signature(getattr(Store, name)).parameters.values()
        got = inspect.signature(getattr(type(store), name)).parameters.values()
        assert [(p.name, p.kind, p.default) for p in got] == [
            (p.name, p.kind, p.default) for p in want
        ], f"{type(store).__name__}.{name}"
    assert isinstance(store, Store)
    # and the check discriminates: leave any one method out and it is no Store
    for missing in methods:
        partial = type("Partial", (), {n: getattr(type(store), n) for n in methods if n != missing})
        assert not isinstance(partial(), Store), missing


def test_challenge_used_once(backend) -> None:
    s = backend.open()
    s.insert_challenge(b"c" * 32, "alice", "register", 123.0)
    assert s.use_challenge(b"c" * 32) == ("alice", "register", 123.0, False)
    assert s.use_challenge(b"c" * 32) == ("alice", "register", 123.0, True)
    assert s.use_challenge(b"x" * 32) is None


class _TwoCallStore:
    """A store that offers only the ``Store`` interface (no combined redeem + read)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def use_challenge(self, value: bytes) -> Any:
        return self._inner.use_challenge(value)

    def get_credential(self, credential_id: bytes) -> Any:
        return self._inner.get_credential(credential_id)


@pytest.mark.parametrize("combined", [True, False], ids=["one-statement", "two-calls"])
def test_challenge_redeemed_with_the_credential_read(backend, combined: bool) -> None:
    s = backend.open()
    s.add_credential(_cred(count=4))
    for v in (b"a" * 32, b"b" * 32):
        s.insert_challenge(v, "alice", "authenticate", 123.0)
    target = s if combined else _TwoCallStore(s)
    assert hasattr(target, "use_challenge_and_get_credential") is combined
    record = s.get_credential(b"cred-1")

    def both(value: bytes, cid: bytes) -> Any:
        return use_challenge_and_get_credential(target, value, cid)

    assert both(b"a" * 32, b"cred-1") == (("alice", "authenticate", 123.0, False), record)
    assert both(b"a" * 32, b"cred-1") == (("alice", "authenticate", 123.0, True), record)
    assert both(b"x" * 32, b"cred-1") == (None, record)
    # An unknown credential still burns a fresh challenge: the caller refuses afterwards.
    assert both(b"b" * 32, b"nobody") == (("alice", "authenticate", 123.0, False), None)
    assert s.use_challenge(b"b" * 32) == ("alice", "authenticate", 123.0, True)
    assert both(b"y" * 32, b"nobody") == (None, None)
    with pytest.raises(VerifierError) as e:
        both(b"a" * 32, "cred-1")  # type: ignore[arg-type]
    assert e.value.reason is Reason.MALFORMED


def test_duplicate_challenge_value_refused(backend) -> None:
    s = backend.open()
    s.insert_challenge(b"c" * 32, "alice", "register", 1.0)
    with pytest.raises(VerifierError) as e:
        s.insert_challenge(b"c" * 32, "bob", "register", 1.0)
    assert e.value.reason is Reason.STORAGE
    assert s.use_challenge(b"c" * 32) == ("alice", "register", 1.0, False)


def test_purge_expired_challenges(backend) -> None:
    s = backend.open()
    s.insert_challenge(b"a" * 32, "u", "register", 10.0)
    s.insert_challenge(b"b" * 32, "u", "register", 20.0)
    assert s.purge_expired_challenges(15.0) == 1
    assert s.use_challenge(b"a" * 32) is None
    assert s.use_challenge(b"b" * 32) is not None


def test_count_open_challenges(backend) -> None:
    # The server's per-user cap counts in the shared database, so every worker sees the same.
    s = backend.open()
    s.insert_challenge(b"a" * 32, "u", "authenticate", 10.0)
    s.insert_challenge(b"b" * 32, "u", "authenticate", 20.0)
    s.insert_challenge(b"c" * 32, "u", "register", 20.0)
    s.insert_challenge(b"d" * 32, "v", "authenticate", 20.0)
    assert s.count_open_challenges("u", 5.0) == 3
    assert s.count_open_challenges("u", 15.0) == 2  # expired ones do not count
    s.use_challenge(b"b" * 32)
    assert s.count_open_challenges("u", 15.0) == 1  # nor used ones
    assert s.count_open_challenges("nobody", 0.0) == 0
    with pytest.raises(VerifierError):
        s.count_open_challenges("u", float("nan"))


def test_sqlite_counts_one_users_open_challenges_by_index(tmp_path: Path) -> None:
    # The cap on open challenges runs on every challenge request: it must read the user's
    # rows only, not every unexpired challenge (which anyone can make by asking).
    with SQLiteStore(tmp_path / "v.db") as s:
        plan = s._conn.execute(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM challenges"
            " WHERE user = ? AND used = 0 AND expires_at >= ?",
            ("u", 0.0),
        ).fetchall()
    assert any("challenges_user (user=? AND expires_at>?)" in row[-1] for row in plan), plan


def test_credentials_roundtrip_and_duplicate(backend) -> None:
    s = backend.open()
    rec = _cred()
    s.add_credential(rec)
    assert s.get_credential(rec.credential_id) == rec
    assert s.get_credential(b"other") is None
    with pytest.raises(VerifierError) as e:
        s.add_credential(_cred(user="mallory"))
    assert e.value.reason is Reason.CREDENTIAL_EXISTS
    assert s.get_credential(rec.credential_id) == rec
    s.add_credential(_cred(b"cred-2"))
    s.add_credential(_cred(b"cred-3", user="bob"))
    # Ordered by creation time, then by id bytes (b"\xff" sorts after b"c" on both).
    s.add_credential(dataclasses.replace(_cred(b"\xff"), created_at=1000.0))
    s.add_credential(dataclasses.replace(_cred(b"\x00"), created_at=1001.0))
    assert [r.credential_id for r in s.credentials_for_user("alice")] == [
        b"cred-1",
        b"cred-2",
        b"\xff",
        b"\x00",
    ]
    assert s.credentials_for_user("carol") == []


def test_credential_without_device_id(backend) -> None:
    s = backend.open()
    rec = CredentialRecord(b"c", "u", b"h", "rp", b"k", 0, None, 1.0)
    s.add_credential(rec)
    assert s.get_credential(b"c") == rec


def test_credential_values_survive_exactly(backend) -> None:
    s = backend.open()
    rec = CredentialRecord(
        credential_id=bytes(range(256)),
        user="zoë 🙂 \u202e",
        user_handle=b"\x00" * 64,
        rp_id="exämple.com",
        public_key=bytes(range(255, -1, -1)),
        sign_count=2**63 - 1,
        device_id=b"",
        created_at=1.7e9 + 0.123456,
    )
    s.add_credential(rec)
    assert s.get_credential(rec.credential_id) == rec
    assert s.credentials_for_user(rec.user) == [rec]


def test_sign_count_compare_and_set(backend) -> None:
    s = backend.open()
    s.add_credential(_cred(count=5))
    assert s.update_sign_count(b"cred-1", 5, 6)
    assert not s.update_sign_count(b"cred-1", 5, 7)  # stale "old": someone got there first
    assert s.get_credential(b"cred-1").sign_count == 6
    assert not s.update_sign_count(b"unknown", 0, 1)


def test_sign_count_out_of_range_is_typed(backend) -> None:
    s = backend.open()
    s.add_credential(_cred())
    for bad in (-1, 2**63, True):
        with pytest.raises(VerifierError) as e:
            s.update_sign_count(b"cred-1", 0, bad)
        assert e.value.reason is Reason.MALFORMED


def test_bad_argument_types_are_typed(backend) -> None:
    s = backend.open()
    for call in (
        lambda: s.insert_challenge("not bytes", "u", "p", 1.0),
        lambda: s.insert_challenge(b"x" * 16, "\ud800", "p", 1.0),
        lambda: s.insert_challenge(b"x" * 16, "u\x00", "p", 1.0),
        lambda: s.insert_challenge(b"x" * 16, "u", "p", float("nan")),
        lambda: s.add_credential(dataclasses.replace(_cred(), rp_id="a\x00b")),
        lambda: s.add_credential(("not", "a", "record")),
        lambda: s.audit("e", blob=b"bytes"),
        lambda: s.audit("e", x=float("inf")),
        lambda: s.audit("e\x00"),
        lambda: s.purge_audit("yesterday"),
        lambda: s.audit_events(-1),
    ):
        with pytest.raises(VerifierError) as e:
            call()
        assert e.value.reason is Reason.MALFORMED
    assert s.use_challenge(b"x" * 16) is None  # nothing half-written


def test_revocation_state_monotonic(backend) -> None:
    s = backend.open()
    assert s.get_revocation_state() is None
    s.set_revocation_state(3, b"three")
    assert s.get_revocation_state() == (3, b"three")
    s.set_revocation_state(3, b"three")  # idempotent
    for serial, data in ((2, b"two"), (3, b"other"), (0, b"three")):
        with pytest.raises(VerifierError) as e:
            s.set_revocation_state(serial, data)
        assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    s.set_revocation_state(4, b"four")
    assert s.get_revocation_state() == (4, b"four")


def test_audit_records_fields(backend) -> None:
    s = backend.open()
    s.audit("registered", user="alice", count=1, ok=True, note=None, ratio=0.5)
    events = s.audit_events()
    assert len(events) == 1
    _, event, fields = events[0]
    assert event == "registered"
    assert fields == {"user": "alice", "count": 1, "ok": True, "note": None, "ratio": 0.5}


def test_audit_events_newest_limit_oldest_first(backend) -> None:
    s = backend.open()
    for i in range(5):
        s.audit(f"e{i}", i=i)
    assert [e[1] for e in s.audit_events(3)] == ["e2", "e3", "e4"]
    assert s.audit_events(0) == []


def test_audit_retention_purges_only_older_events(backend) -> None:
    s = backend.open()
    s.audit("old")
    s.audit("new")
    (t_old, _, _), (t_new, _, _) = s.audit_events()
    assert s.purge_audit(t_old) == 0  # strictly before
    # Events carry the writer's clock; make the two distinct to cut between them.
    with _admin(backend) as conn:
        conn.execute("UPDATE audit SET time = time - 100 WHERE event = 'old'")
    assert s.purge_audit(t_new - 50) == 1
    assert [e[1] for e in s.audit_events()] == ["new"]
    assert s.purge_audit(t_new + 1) == 1
    assert s.audit_events() == []


def test_store_persists_across_reopen(backend) -> None:
    with backend.open() as s:
        s.add_credential(_cred())
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        s.use_challenge(b"c" * 32)
        s.set_revocation_state(2, b"two")
        s.audit("registered")
    with backend.open() as s:
        assert s.get_credential(b"cred-1") == _cred()
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert s.get_revocation_state() == (2, b"two")
        assert [e[1] for e in s.audit_events()] == ["registered"]
        assert s.schema_version == SCHEMA_VERSION


def test_sqlite_file_uses_wal_and_user_version(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _set_schema_version(backend: Any, version: int) -> None:
    with _admin(backend) as conn:
        if backend.name == "sqlite":
            conn.execute(f"PRAGMA user_version = {version}")
        else:
            conn.execute("UPDATE verifier_schema SET version = %s", (version,))


def test_newer_schema_version_refused(backend) -> None:
    backend.open().close()
    _set_schema_version(backend, SCHEMA_VERSION + 1)
    with pytest.raises(VerifierError) as e:
        backend.open()
    assert e.value.reason is Reason.STORAGE


def _make_v1_database(backend: Any) -> None:
    """A database exactly as a version-1 verifier left it, with some state in it."""
    if backend.name == "sqlite":
        from verifier.store.sqlite import _MIGRATIONS
    else:
        from verifier.store.postgres import _MIGRATIONS
    with _admin(backend) as conn:
        if backend.name == "postgres":
            conn.execute("CREATE TABLE verifier_schema (id integer PRIMARY KEY, version integer)")
            conn.execute("INSERT INTO verifier_schema VALUES (1, 1)")
        for statement in _MIGRATIONS[1]:
            conn.execute(statement)
        if backend.name == "sqlite":
            conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO audit (time, event, fields) VALUES (5.0, 'kept', '{}')")


def test_version_1_database_migrates_forward(backend) -> None:
    _make_v1_database(backend)
    with backend.open() as s:
        assert s.schema_version == SCHEMA_VERSION == 4
        assert [e[1] for e in s.audit_events()] == ["kept"]
        s.audit("after")
    with _admin(backend) as conn:
        if backend.name == "sqlite":
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master").fetchall()]
        else:
            names = [r[0] for r in conn.execute("SELECT indexname FROM pg_indexes").fetchall()]
        assert "audit_time" in names
        assert "challenges_user" in names
    # Opening again is a no-op (already at the current version).
    with backend.open() as s:
        assert [e[1] for e in s.audit_events()] == ["kept", "after"]


def _race(open_store: Any, openers: int = 4) -> tuple[list[Any], list[BaseException]]:
    """Run ``open_store`` in ``openers`` threads released at once: (stores, errors)."""
    stores: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(openers)

    def opener() -> None:
        barrier.wait()
        try:
            stores.append(open_store())
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stores, errors


def test_concurrent_opens_of_a_new_database_create_it_once(backend) -> None:
    stores, errors = _race(backend.open)
    assert errors == [] and len(stores) == 4
    stores[0].audit("one")
    assert [e[1] for e in stores[3].audit_events()] == ["one"]


def test_foreign_database_refused(backend) -> None:
    with _admin(backend) as conn:
        conn.execute("CREATE TABLE t (x integer)")
    with pytest.raises(VerifierError) as e:
        backend.open()
    assert e.value.reason is Reason.STORAGE


def test_sqlite_concurrent_first_opens_never_fail_on_the_wal_switch(tmp_path: Path) -> None:
    # SQLite refuses a journal-mode change with "database is locked" at once, without the busy
    # timeout, while another connection is opening the same new file; about 1 first open in
    # 120 failed that way before the store retried the switch. 150 rounds of 4 racing openers
    # caught it on every run of the old code.
    failures: list[BaseException] = []
    for round_no in range(150):
        path = tmp_path / f"race{round_no}.db"
        opened, errors = _race(lambda path=path: SQLiteStore(path))
        failures += errors
        for store in opened:
            store.close()
    assert failures == []


def test_sqlite_not_a_database_is_storage_error(tmp_path: Path) -> None:
    db = tmp_path / "junk.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(VerifierError) as e:
        SQLiteStore(db)
    assert e.value.reason is Reason.STORAGE


def test_sqlite_unopenable_path_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(VerifierError) as e:
        SQLiteStore(tmp_path / "missing-dir" / "v.db")
    assert e.value.reason is Reason.STORAGE


def test_postgres_unreachable_server_is_storage_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(VerifierError) as e:
        open_store(f"postgresql://nobody@/postgres?host={tmp_path}", timeout=2)
    assert e.value.reason is Reason.STORAGE


def test_postgres_missing_database_is_storage_error(pg_backend) -> None:
    url = pg_backend.server.url("no_such_database")
    with pytest.raises(VerifierError) as e:
        open_store(url, timeout=2)
    assert e.value.reason is Reason.STORAGE
    assert "no_such_database" in str(e.value)  # the server's own reason, first line only


@pytest.mark.parametrize(
    "url",
    ["postgresql://host/db?sslmode=nonsense=", "postgresql://[::1", "postgresql:///db?bogus=1"],
)
def test_postgres_bad_url_is_malformed(url: str) -> None:
    pytest.importorskip("psycopg")
    # Refused while parsing: no connection (and no name lookup) is attempted.
    with pytest.raises(VerifierError) as e:
        open_store(url, timeout=2)
    assert e.value.reason is Reason.MALFORMED


def test_postgres_fsync_off_server_refused_for_full_durability(pg_backend) -> None:
    with _admin(pg_backend) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("SELECT pg_reload_conf()")
    try:
        _wait_for_setting(pg_backend, "fsync", "off")
        with pytest.raises(VerifierError) as e:
            pg_backend.open()
        assert e.value.reason is Reason.STORAGE
        assert "fsync" in str(e.value)
        pg_backend.open(durability="normal").close()  # said so: commits are not flushed
    finally:
        with _admin(pg_backend) as conn:
            conn.execute("ALTER SYSTEM RESET fsync")
            conn.execute("SELECT pg_reload_conf()")
        _wait_for_setting(pg_backend, "fsync", "on")


def _wait_for_setting(backend: Any, name: str, value: str) -> None:
    # pg_reload_conf() signals the postmaster; new sessions see the value once it re-read
    # the file. Bounded: 200 polls of a fresh session.
    for _ in range(200):
        with _admin(backend) as conn:
            if conn.execute(f"SHOW {name}").fetchone()[0] == value:
                return
    raise AssertionError(f"{name} never became {value}")


# -- open_store ---------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in (":memory:", "sqlite://"):
        with open_store(url) as s:
            assert isinstance(s, SQLiteStore) and s._path == ":memory:"
    with open_store("sqlite:///rel.db") as s:
        assert s._path == "rel.db"
    with open_store(f"sqlite:///{tmp_path}/abs.db") as s:
        assert s._path == f"{tmp_path}/abs.db"
    with open_store("plain.db", durability="normal") as s:
        assert s._path == "plain.db" and s.durability == "normal"
    with open_store(tmp_path / "p.db") as s:
        assert s._path == str(tmp_path / "p.db")
    assert {p.name for p in tmp_path.iterdir()} >= {"rel.db", "abs.db", "plain.db", "p.db"}
    for bad in ("mysql://host/db", "sqlite:/x.db", "sqlite:///", "", None):
        with pytest.raises(VerifierError) as e:
            open_store(bad)
        assert e.value.reason is Reason.MALFORMED, bad


def test_open_store_without_the_postgres_extra_is_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "verifier.store.postgres", raising=False)
    with pytest.raises(VerifierError) as e:
        open_store("postgresql://localhost/verifier")
    assert e.value.reason is Reason.STORAGE
    assert "[postgres]" in str(e.value)


def test_open_store_picks_postgres(pg_backend) -> None:
    from verifier.store import PostgresStore

    with open_store(pg_backend.url) as s:
        assert isinstance(s, PostgresStore)
    with open_store(pg_backend.url.replace("postgresql://", "postgres://", 1)) as s:
        assert isinstance(s, PostgresStore)


# -- races: several verifier processes on one database ------------------------------------


def test_connections_race_for_one_challenge(backend) -> None:
    stores = [backend.open() for _ in range(4)]
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


_RACE_ROUNDS = 200


def _race_challenges(url: str, barrier: Any, out: Any) -> None:
    """One verifier process: redeem every challenge in lockstep with its rival."""
    with open_store(url) as s:
        wins = []
        for i in range(_RACE_ROUNDS):
            barrier.wait()
            value = i.to_bytes(4, "big") * 8
            # Every other round through the statement that also reads the credential.
            if i % 2:
                got, _ = s.use_challenge_and_get_credential(value, b"cred-1")
            else:
                got = s.use_challenge(value)
            wins.append(got is not None and not got[3])
        out.put(wins)


def _race_counter(url: str, me: int, barrier: Any, out: Any) -> None:
    """One verifier process verifying assertions from a cloned key: in each round both
    processes redeem their own challenge and try to move the counter from i to i + 1, in one
    transaction, as verify_assertion does."""
    with open_store(url) as s:
        wins = []
        for i in range(_RACE_ROUNDS):
            barrier.wait()
            with s.atomic():
                value = bytes([me]) + i.to_bytes(4, "big") * 7 + b"\0\0\0"
                got, record = s.use_challenge_and_get_credential(value, b"cred-1")
                assert got is not None and not got[3] and record is not None
                won = s.update_sign_count(b"cred-1", i, i + 1)
                s.audit("assertion_verified" if won else "assertion_refused", round=i)
            wins.append(won)
        out.put(wins)


def _run_rivals(target: Any, args: list[tuple[Any, ...]]) -> list[list[bool]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, out)) for a in args]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return results


def test_processes_race_for_each_challenge(backend) -> None:
    with backend.open() as s:
        for i in range(_RACE_ROUNDS):
            s.insert_challenge(i.to_bytes(4, "big") * 8, "alice", "authenticate", 1e12)
    a, b = _run_rivals(_race_challenges, [(backend.url,), (backend.url,)])
    assert len(a) == len(b) == _RACE_ROUNDS
    assert all(x != y for x, y in zip(a, b, strict=True)), "exactly one process wins each"


def test_processes_race_for_each_counter_value(backend) -> None:
    with backend.open() as s:
        s.add_credential(_cred(count=0))
        for me in (1, 2):
            for i in range(_RACE_ROUNDS):
                value = bytes([me]) + i.to_bytes(4, "big") * 7 + b"\0\0\0"
                s.insert_challenge(value, "alice", "authenticate", 1e12)
    a, b = _run_rivals(_race_counter, [(backend.url, 1), (backend.url, 2)])
    assert all(x != y for x, y in zip(a, b, strict=True)), "exactly one process moves each"
    with backend.open() as s:
        assert s.get_credential(b"cred-1").sign_count == _RACE_ROUNDS
        events = [e[1] for e in s.audit_events(10 * _RACE_ROUNDS)]
        assert events.count("assertion_verified") == events.count("assertion_refused")
        assert len(events) == 2 * _RACE_ROUNDS


def test_counter_cas_race(backend) -> None:
    a, b = backend.open(), backend.open()
    a.add_credential(_cred(count=10))
    # Both read 10 and try to move on: only one may succeed.
    assert [a.update_sign_count(b"cred-1", 10, 11), b.update_sign_count(b"cred-1", 10, 12)] == [
        True,
        False,
    ]
    assert b.get_credential(b"cred-1").sign_count == 11


def test_revocation_install_race_keeps_highest(backend) -> None:
    a, b = backend.open(), backend.open()
    # Both installers saw "no list yet"; A installs serial 5 first, then B's serial 3 must
    # not overwrite it even though B's own pre-check passed.
    assert a.get_revocation_state() is None and b.get_revocation_state() is None
    a.set_revocation_state(5, b"five")
    with pytest.raises(VerifierError) as e:
        b.set_revocation_state(3, b"three")
    assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    assert b.get_revocation_state() == (5, b"five")


def test_revocation_installers_racing_threads_keep_the_highest(backend) -> None:
    stores = [backend.open() for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[object] = [None] * len(stores)

    def install(i: int) -> None:
        barrier.wait()
        try:
            stores[i].set_revocation_state(i + 1, b"list %d" % (i + 1))
            outcomes[i] = True
        except VerifierError as exc:
            outcomes[i] = exc.reason

    threads = [threading.Thread(target=install, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(outcomes) <= {True, Reason.REVOCATION_LIST_ROLLBACK}
    assert outcomes[-1] is True  # the highest serial can never be refused
    assert stores[0].get_revocation_state() == (6, b"list 6")


# -- atomic(): one write transaction per verification ------------------------------------


def _commits(backend: Any, store: Any) -> Any:
    """A function returning how many durable commits ``store``'s database made since this
    call. SQLite: COMMITs plus writes outside any BEGIN, traced on the store's private
    connection. PostgreSQL: transaction ids assigned (one per writing transaction; the
    test cluster runs nothing else, autovacuum is off). Test only."""
    if backend.name == "postgres":
        import psycopg

        admin = psycopg.connect(backend.url, autocommit=True)
        backend.opened.append(admin)

        def next_xid() -> int:
            return int(
                admin.execute(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                ).fetchone()[0]
            )

        start = next_xid()
        return lambda: next_xid() - start

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
    return lambda: count[0]


def _verification_writes(s: Any, challenge: bytes) -> None:
    """What verify_assertion writes: burn the challenge, raise the counter, audit."""
    assert s.use_challenge(challenge) is not None
    assert s.get_credential(b"cred-1") is not None
    assert s.update_sign_count(b"cred-1", 0, 1)
    s.audit("assertion_verified", credential_id="cred-1")


def test_atomic_makes_one_commit_instead_of_three(backend) -> None:
    with backend.open() as s:
        s.add_credential(_cred())
        s.insert_challenge(b"a" * 32, "alice", "authenticate", 1e12)
        s.insert_challenge(b"b" * 32, "alice", "authenticate", 1e12)
        commits = _commits(backend, s)
        _verification_writes(s, b"a" * 32)
        assert commits() == 3
        s.update_sign_count(b"cred-1", 1, 0)
        commits = _commits(backend, s)
        with s.atomic():
            _verification_writes(s, b"b" * 32)
        assert commits() == 1


def test_atomic_writes_are_invisible_until_the_block_ends(backend) -> None:
    with backend.open() as s, backend.open() as other:
        s.add_credential(_cred())
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with s.atomic():
            _verification_writes(s, b"c" * 32)
            # Another process sees the state before the block: nothing was committed yet.
            assert other.get_credential(b"cred-1").sign_count == 0
            assert other.audit_events() == []
        assert other.get_credential(b"cred-1").sign_count == 1
        assert other.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert [e[1] for e in other.audit_events()] == ["assertion_verified"]


@pytest.mark.parametrize("error", [VerifierError(Reason.BAD_SIGNATURE, "x"), RuntimeError("bug")])
def test_atomic_keeps_the_burned_challenge_when_the_block_raises(backend, error: Exception) -> None:
    with backend.open() as s:
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with pytest.raises(type(error)), s.atomic():
            assert s.use_challenge(b"c" * 32) is not None
            s.audit("assertion_refused", reason="bad_signature")
            raise error
    # A refusal (or a bug) after the burn must not hand the challenge back.
    with backend.open() as again:
        assert again.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert [e[1] for e in again.audit_events()] == ["assertion_refused"]


def test_atomic_nested_blocks_join_the_outer_transaction(backend) -> None:
    with backend.open() as s, backend.open() as other:
        commits = _commits(backend, s)
        with s.atomic():
            s.audit("one")
            with s.atomic():
                s.audit("two")
            assert other.audit_events() == []
        assert commits() == 1
        assert [e[1] for e in other.audit_events()] == ["one", "two"]


def test_audit_inside_atomic_is_read_back_inside_it(backend) -> None:
    with backend.open() as s, backend.open() as other:
        s.audit("before")
        with s.atomic():
            s.audit("inside")
            assert [e[1] for e in s.audit_events()] == ["before", "inside"]
            assert other.audit_events()[-1][1] == "before"
            s.audit("late")
        assert [e[1] for e in other.audit_events()] == ["before", "inside", "late"]
        with s.atomic():
            s.audit("purged with the rest")
            assert s.purge_audit(1e12) == 4
        assert s.audit_events() == []


def test_audit_text_survives_exactly_when_sent_with_the_commit(backend) -> None:
    # PostgreSQL sends a block's audit rows with its COMMIT, quoted by the client: values
    # that break naive quoting must come back byte for byte, and run nothing.
    nasty = [
        "'); DROP TABLE audit; --",
        "\\x00 \\' \\\\",
        "$$ $tag$ E'\\n'",
        "zoë 🙂 \u202e",
        "%s %(x)s {}",
    ]
    with backend.open() as s:
        with s.atomic():
            for i, text in enumerate(nasty):
                s.audit(f"event {text}", text=text, n=i, ratio=1 / 3, flag=False, none=None)
        events = s.audit_events()
    assert [e[1] for e in events] == [f"event {t}" for t in nasty]
    assert [e[2] for e in events] == [
        {"text": t, "n": i, "ratio": 1 / 3, "flag": False, "none": None}
        for i, t in enumerate(nasty)
    ]


def test_failed_call_inside_atomic_undoes_only_itself(backend) -> None:
    with backend.open() as s:
        s.set_revocation_state(5, b"five")
        s.add_credential(_cred())
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with s.atomic():
            s.audit("before")
            with pytest.raises(VerifierError) as e:
                s.set_revocation_state(3, b"three")
            assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
            with pytest.raises(VerifierError) as e:
                s.add_credential(_cred())
            assert e.value.reason is Reason.CREDENTIAL_EXISTS
            with pytest.raises(VerifierError) as e:
                s.insert_challenge(b"c" * 32, "bob", "authenticate", 1.0)
            assert e.value.reason is Reason.STORAGE
            s.audit("after")
        assert s.get_revocation_state() == (5, b"five")
        assert [ev[1] for ev in s.audit_events()] == ["before", "after"]
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, False)


def test_atomic_holds_the_challenge_against_other_connections(backend) -> None:
    with backend.open() as s, backend.open(timeout=0.2) as other:
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
        with s.atomic():
            assert s.use_challenge(b"c" * 32) is not None
            # A racing verifier cannot redeem (or even wait its turn) until we commit:
            # SQLite's write lock, PostgreSQL's row lock; past its timeout it fails closed.
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


def test_postgres_threads_sharing_one_store_wait_on_the_redeemed_row(pg_backend) -> None:
    # PostgreSQL locks rows, not the database: another thread of the same store uses its
    # own pooled connection, is not joined into this thread's block, and waits on the
    # challenge row this block redeemed until the block commits.
    s = pg_backend.open()
    s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
    seen: list[object] = []
    with s.atomic():
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, False)
        t = threading.Thread(target=lambda: seen.append(s.use_challenge(b"c" * 32)))
        t.start()
        t.join(0.3)
        assert t.is_alive() and seen == []
    t.join()
    assert seen == [("alice", "authenticate", 1e12, True)]


def test_postgres_failed_statement_aborts_the_block_and_says_so(pg_backend) -> None:
    s = pg_backend.open()
    s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
    with pytest.raises(VerifierError) as e, s.atomic():
        assert s.use_challenge(b"c" * 32) is not None
        with s._conn() as conn:  # a statement the server refuses, as a fault would be
            conn.execute("SELECT 1 / 0")
    assert e.value.reason is Reason.STORAGE
    # The block's writes were rolled back with it, and the caller was told (never "ok").
    assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, False)
    with pytest.raises(VerifierError) as e, s.atomic():
        with pytest.raises(VerifierError), s._conn() as conn:
            conn.execute("SELECT 1 / 0")
        with pytest.raises(VerifierError) as later:
            s.audit("after the fault")
        assert later.value.reason is Reason.STORAGE
    assert e.value.reason is Reason.STORAGE
    assert s.audit_events() == []


def test_postgres_server_restart_fails_closed_then_recovers(pg_backend) -> None:
    server = pg_backend.server
    s = pg_backend.open(timeout=5)
    s.insert_challenge(b"a" * 32, "alice", "authenticate", 1e12)
    s.add_credential(_cred())
    with s.atomic():
        s.use_challenge(b"a" * 32)
        s.update_sign_count(b"cred-1", 0, 9)
    server.stop("immediate")  # a crash: no clean shutdown, recovery from the WAL
    try:
        with pytest.raises(VerifierError) as e:
            s.use_challenge(b"a" * 32)
        assert e.value.reason is Reason.STORAGE
    finally:
        server.start()
    # The pool replaces the dead connection: at most one more call fails, then it serves.
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(s.use_challenge(b"a" * 32))
        except VerifierError as exc:
            outcomes.append(exc.reason)
    assert outcomes[-2:] == [("alice", "authenticate", 1e12, True)] * 2
    assert set(outcomes[:1]) <= {Reason.STORAGE, ("alice", "authenticate", 1e12, True)}
    # What was committed before the crash survived it.
    assert s.get_credential(b"cred-1").sign_count == 9


def _hold_and_hang(url: str, ready: Any) -> None:
    """A verifier that commits one burn, then stops for ever inside its next transaction."""
    s = open_store(url)
    assert s.use_challenge(b"a" * 32) is not None
    with s.atomic():
        assert s.use_challenge(b"b" * 32) is not None
        s.audit("never committed")
        ready.set()
        time.sleep(600)


def test_a_verifier_killed_inside_a_transaction_loses_only_the_uncommitted(backend) -> None:
    with backend.open() as s:
        for v in (b"a" * 32, b"b" * 32):
            s.insert_challenge(v, "alice", "authenticate", 1e12)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_and_hang, args=(backend.url, ready))
    proc.start()
    try:
        assert ready.wait(60)
        survivor = backend.open()
        waited: list[object] = []
        # A rival waits on the killed verifier's lock (SQLite's write lock, PostgreSQL's row
        # lock)...
        rival = threading.Thread(target=lambda: waited.append(survivor.use_challenge(b"b" * 32)))
        rival.start()
        rival.join(0.3)
        assert rival.is_alive() and waited == []
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    # ... and gets it when the process dies: its open transaction is gone (the caller was
    # never answered), what it had committed stays, and the survivor keeps serving.
    rival.join(30)
    assert waited == [("alice", "authenticate", 1e12, False)]
    assert survivor.use_challenge(b"a" * 32) == ("alice", "authenticate", 1e12, True)
    assert survivor.audit_events() == []


# -- durability ---------------------------------------------------------------------------


@pytest.mark.parametrize(("durability", "level"), [("full", 2), ("normal", 1)])
def test_sqlite_durability_sets_synchronous(tmp_path: Path, durability: str, level: int) -> None:
    with SQLiteStore(tmp_path / "v.db", durability=durability) as s:
        assert s.durability == durability
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(("durability", "setting"), [("full", "on"), ("normal", "off")])
def test_postgres_durability_sets_synchronous_commit(
    pg_backend, durability: str, setting: str
) -> None:
    with pg_backend.open(durability=durability) as s:
        assert s.durability == durability
        for _ in range(2):
            with s.atomic(), s._conn() as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone()[0] == setting
                assert conn.execute("SHOW fsync").fetchone()[0] == "on"


def test_default_durability_is_full(backend) -> None:
    with backend.open() as s:
        assert s.durability == "full"
        if backend.name == "sqlite":
            assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        else:
            with s._conn() as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


@pytest.mark.parametrize("bad", ["off", "FULL", "", None, 2])
def test_unknown_durability_refused(backend, bad: object) -> None:
    with pytest.raises(VerifierError) as e:
        backend.open(durability=bad)
    assert e.value.reason is Reason.MALFORMED


def _burn_and_die(url: str, durability: str) -> None:
    s = open_store(url, durability=durability)
    with s.atomic():
        s.use_challenge(b"c" * 32)
        s.update_sign_count(b"cred-1", 0, 7)
    # Crash without closing: no checkpoint, no clean shutdown, the WAL stays behind.
    os._exit(0)


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_committed_state_survives_a_process_crash(backend, durability: str) -> None:
    with backend.open() as s:
        s.add_credential(_cred())
        s.insert_challenge(b"c" * 32, "alice", "authenticate", 1e12)
    proc = multiprocessing.get_context("spawn").Process(
        target=_burn_and_die, args=(backend.url, durability)
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    with backend.open() as s:
        assert s.use_challenge(b"c" * 32) == ("alice", "authenticate", 1e12, True)
        assert s.get_credential(b"cred-1").sign_count == 7


def test_memory_store_accepts_either_durability() -> None:
    for durability in ("full", "normal"):
        with SQLiteStore(durability=durability) as s:
            s.insert_challenge(b"c" * 32, "alice", "authenticate", 1.0)
            assert s.use_challenge(b"c" * 32) is not None


# -- challenges in one statement ----------------------------------------------------------


def test_use_challenge_distinguishes_unknown_used_and_fresh_inside_atomic(backend) -> None:
    s = backend.open()
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
        with pytest.raises(VerifierError) as info:
            _ = rec.ed25519_public_key
        assert info.value.reason is Reason.MALFORMED


# -- the two backends agree ---------------------------------------------------------------


_KINDS = (
    *("insert", "insert", "use", "use", "use", "purge", "add", "add", "get", "cas", "cas"),
    *("user", "rev", "rev", "getrev", "audit", "events", "purge_audit", "atomic"),
)


def _operations(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    """A seeded random workload over a small key space, so that duplicates, reuse, stale
    counters and revocation rollbacks all happen often."""
    challenges = [bytes([i]) * 32 for i in range(12)]
    creds = [b"cred-%d" % i for i in range(5)]
    users = ["alice", "bob", "zoë"]
    ops: list[tuple[Any, ...]] = []
    for _ in range(n):
        kind = rng.choice(_KINDS)
        if kind == "insert":
            ops.append((kind, rng.choice(challenges), rng.choice(users), float(rng.randint(0, 9))))
        elif kind == "use":
            ops.append((kind, rng.choice(challenges)))
        elif kind == "purge":
            ops.append((kind, float(rng.randint(0, 10))))
        elif kind == "add":
            cid = rng.choice(creds)
            ops.append((kind, cid, rng.choice(users), rng.randint(0, 3), float(rng.randint(0, 2))))
        elif kind in ("get",):
            ops.append((kind, rng.choice(creds)))
        elif kind == "cas":
            old = rng.randint(0, 4)
            ops.append((kind, rng.choice(creds), old, old + rng.randint(0, 2)))
        elif kind == "user":
            ops.append((kind, rng.choice(users)))
        elif kind == "rev":
            ops.append((kind, rng.randint(0, 6), rng.choice([b"x", b"y"])))
        elif kind == "audit":
            ops.append((kind, rng.choice(["a", "b"]), rng.randint(0, 9)))
        elif kind == "events":
            ops.append((kind, rng.randint(0, 5)))
        elif kind == "purge_audit":
            ops.append((kind, rng.choice([0.0, 1e12])))
        elif kind == "atomic":
            ops.append((kind, rng.choice([True, False])))
        else:
            ops.append((kind,))
    return ops


def _apply(s: Any, ops: list[tuple[Any, ...]]) -> list[object]:
    out: list[object] = []
    block: Any = None
    for op in ops:
        kind, *args = op
        try:
            if kind == "atomic":
                # Open a block, or close the open one (by an exception half the time: the
                # writes stay either way).
                if block is None:
                    block = s.atomic()
                    block.__enter__()
                    result: object = "begin"
                else:
                    if args[0]:
                        block.__exit__(RuntimeError, RuntimeError("x"), None)
                    else:
                        block.__exit__(None, None, None)
                    block, result = None, "end"
            elif kind == "insert":
                result = s.insert_challenge(args[0], args[1], "authenticate", args[2])
            elif kind == "use":
                result = s.use_challenge(args[0])
            elif kind == "purge":
                result = s.purge_expired_challenges(args[0])
            elif kind == "add":
                cid, user, count, created = args
                rec = CredentialRecord(cid, user, b"h" + cid, "rp", b"k", count, None, created)
                result = s.add_credential(rec)
            elif kind == "get":
                result = s.get_credential(args[0])
            elif kind == "cas":
                result = s.update_sign_count(*args)
            elif kind == "user":
                result = s.credentials_for_user(args[0])
            elif kind == "rev":
                result = s.set_revocation_state(*args)
            elif kind == "getrev":
                result = s.get_revocation_state()
            elif kind == "audit":
                result = s.audit(args[0], n=args[1])
            elif kind == "events":
                result = [(e, f) for _, e, f in s.audit_events(args[0])]
            else:
                result = s.purge_audit(args[0])
        except VerifierError as exc:
            result = exc.reason
        out.append((kind, result))
    if block is not None:
        block.__exit__(None, None, None)
    out.append(("final", [(e, f) for _, e, f in s.audit_events(10_000)]))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_postgres_and_sqlite_agree_on_a_seeded_workload(pg_backend, seed: int) -> None:
    ops = _operations(random.Random(seed), 400)
    with SQLiteStore() as lite:
        expected = _apply(lite, ops)
    got = _apply(pg_backend.open(), ops)
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        assert g == e, f"step {i}: {ops[i] if i < len(ops) else 'final'}"
    # The workload is not trivial: it refused, reused and rolled back along the way.
    reasons = {r for _, r in expected if isinstance(r, Reason)}
    assert {Reason.CREDENTIAL_EXISTS, Reason.REVOCATION_LIST_ROLLBACK, Reason.STORAGE} <= reasons
    assert any(k == "use" and r is not None and r[3] for k, r in expected)  # a reused one


def test_first_credential_for_a_user_is_atomic(backend) -> None:
    """Two verifier processes (two stores on one database) race to store the first
    credential of one new user: exactly one wins, the other gets USER_ALREADY_REGISTERED."""
    import threading

    for round_ in range(5):
        user = f"new-{round_}"
        stores = [backend.open(), backend.open()]
        start = threading.Barrier(2)
        outcomes: list[str] = []

        def register(store, cid, user=user, start=start, outcomes=outcomes) -> None:
            start.wait()
            try:
                store.add_credential(_cred(cid, user=user), first_for_user=True)
                outcomes.append("stored")
            except VerifierError as exc:
                outcomes.append(exc.reason.value)

        threads = [
            threading.Thread(target=register, args=(s, f"{user}/{i}".encode()))
            for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["stored", "user_already_registered"], outcomes
        assert len(stores[0].credentials_for_user(user)) == 1
    # Without the flag, a second device for an existing user is still allowed.
    s = backend.open()
    s.add_credential(_cred(b"second", user="new-0"))
    assert len(s.credentials_for_user("new-0")) == 2


# -- payments (schema 3) --------------------------------------------------------------


def _pay(pid: str, micros: int, at: float, user: str = "alice", currency: str = "EUR") -> Any:
    return PaymentRecord(
        payment_id=pid,
        user=user,
        credential_id=b"cred-1",
        currency=currency,
        amount_micros=micros,
        payment=b'{"total":{}}',
        method="face",
        assurance="strong",
        sign_count=7,
        authorised_at=at,
    )


def test_payment_request_roundtrip(backend) -> None:
    with backend.open() as s:
        s.add_payment_request("r1", b"\x01" * 32, "alice", b'{"a":1}', 10.0)
        assert s.get_payment_request("r1") == (b"\x01" * 32, "alice", b'{"a":1}', 10.0)
        assert s.get_payment_request("r2") is None
        with pytest.raises(VerifierError) as e:
            s.add_payment_request("r1", b"\x02" * 32, "bob", b"{}", 11.0)
        assert e.value.reason is Reason.STORAGE


def test_payments_add_up_per_user_currency_and_window(backend) -> None:
    with backend.open() as s:
        assert s.add_payment(_pay("a", 2_500_000, 100.0), limit=None, since=0.0) == 2_500_000
        assert s.add_payment(_pay("b", 1_000_000, 200.0), limit=None, since=0.0) == 3_500_000
        s.add_payment(_pay("c", 9_000_000, 200.0, user="bob"), limit=None, since=0.0)
        s.add_payment(_pay("d", 9_000_000, 200.0, currency="GBP"), limit=None, since=0.0)
        assert s.payment_total("alice", "EUR", 0.0) == 3_500_000
        assert s.payment_total("alice", "EUR", 150.0) == 1_000_000
        assert s.payment_total("carol", "EUR", 0.0) == 0
        assert s.get_payment("a") == _pay("a", 2_500_000, 100.0)
        assert s.get_payment("zz") is None
        with pytest.raises(VerifierError) as e:
            s.add_payment(_pay("a", 1, 300.0), limit=None, since=0.0)
        assert e.value.reason is Reason.STORAGE


def test_a_payment_over_the_limit_writes_nothing(backend) -> None:
    with backend.open() as s:
        assert s.add_payment(_pay("a", 20_000_000, 100.0), limit=30_000_000, since=0.0)
        assert s.add_payment(_pay("b", 10_000_000, 101.0), limit=30_000_000, since=0.0)
        assert s.add_payment(_pay("c", 1, 102.0), limit=30_000_000, since=0.0) is None
        assert s.get_payment("c") is None
        assert s.payment_total("alice", "EUR", 0.0) == 30_000_000
        # inside atomic() too (a savepoint there, the block's transaction otherwise)
        with s.atomic():
            assert s.add_payment(_pay("d", 1, 103.0), limit=30_000_000, since=0.0) is None
            assert s.add_payment(_pay("e", 5, 103.0), limit=None, since=0.0) == 30_000_005
        assert s.get_payment("e") is not None


def test_bad_payment_arguments_are_typed(backend) -> None:
    with backend.open() as s:
        for bad in (
            lambda: s.add_payment("x", limit=None, since=0.0),
            lambda: s.add_payment(_pay("a", -1, 1.0), limit=None, since=0.0),
            lambda: s.add_payment(_pay("a", 1, 1.0), limit=-5, since=0.0),
            lambda: s.payment_total("alice", "EUR", float("nan")),
            lambda: s.get_payment(7),
        ):
            with pytest.raises(VerifierError) as e:
                bad()
            assert e.value.reason is Reason.MALFORMED


def test_racing_tills_cannot_both_squeeze_under_the_daily_limit(backend) -> None:
    stores = [backend.open() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    results: list[Any] = []

    def till(i: int) -> None:
        barrier.wait()
        results.append(
            stores[i].add_payment(_pay(f"p{i}", 10_000_000, 100.0), limit=25_000_000, since=0.0)
        )

    threads = [threading.Thread(target=till, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r is not None for r in results) == [False, False, True, True]
    assert stores[0].payment_total("alice", "EUR", 0.0) == 20_000_000


def test_version_2_database_migrates_to_the_payments_schema(backend) -> None:
    if backend.name == "sqlite":
        from verifier.store.sqlite import _MIGRATIONS
    else:
        from verifier.store.postgres import _MIGRATIONS
    with _admin(backend) as conn:
        if backend.name == "postgres":
            conn.execute("CREATE TABLE verifier_schema (id integer PRIMARY KEY, version integer)")
            conn.execute("INSERT INTO verifier_schema VALUES (1, 2)")
        for step in (1, 2):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        if backend.name == "sqlite":
            conn.execute("PRAGMA user_version = 2")
        conn.execute("INSERT INTO audit (time, event, fields) VALUES (5.0, 'kept', '{}')")
    with backend.open() as s:
        assert s.schema_version == SCHEMA_VERSION == 4
        assert [e[1] for e in s.audit_events()] == ["kept"]
        assert s.add_payment(_pay("a", 1, 1.0), limit=None, since=0.0) == 1
