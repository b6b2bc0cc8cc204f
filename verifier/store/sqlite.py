"""``SQLiteStore``: the embedded default store (stdlib ``sqlite3``), one file or ``":memory:"``.

See :mod:`verifier.store.base` for the interface and the two atomicity promises. Every
``sqlite3`` failure surfaces as ``VerifierError(Reason.STORAGE)``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verifier.errors import Reason, VerifierError

from .base import (
    PAYMENT_COLUMNS,
    SCHEMA_VERSION,
    CredentialRecord,
    Durability,
    PaymentRecord,
    audit_rows,
    audit_text,
    check_bytes,
    check_durability,
    check_int,
    check_payment_record,
    check_record,
    check_str,
    check_time,
    over_limit,
    payment_from_row,
    record_from_row,
    storage_error,
)

_PAYMENT_COLUMNS = PAYMENT_COLUMNS.format(user="user")

__all__ = ["SQLiteStore"]

_SYNCHRONOUS = {"full": ("FULL", 2), "normal": ("NORMAL", 1)}

# UPDATE ... RETURNING (SQLite 3.35) redeems a challenge in one statement instead of two.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# The verify path's statements, one text each (sqlite3 caches their compiled form by text).
_REDEEM_SQL = (
    "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0"
    " RETURNING user, purpose, expires_at"
)
_CREDENTIAL_SQL = (
    "SELECT credential_id, user, user_handle, rp_id, public_key, sign_count, device_id,"
    " created_at FROM credentials WHERE credential_id = ?"
)
_COUNTER_CAS_SQL = (
    "UPDATE credentials SET sign_count = ? WHERE credential_id = ? AND sign_count = ?"
)
_AUDIT_SQL = "INSERT INTO audit (time, event, fields) VALUES (?, ?, ?)"

# Version 1, created on a new file; later versions are reached through _MIGRATIONS.
_SCHEMA_V1 = (
    """
    CREATE TABLE challenges (
        value      BLOB PRIMARY KEY,
        user       TEXT NOT NULL,
        purpose    TEXT NOT NULL,
        expires_at REAL NOT NULL,
        used       INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1))
    ) WITHOUT ROWID
    """,
    "CREATE INDEX challenges_expires ON challenges (expires_at)",
    """
    CREATE TABLE credentials (
        credential_id BLOB PRIMARY KEY,
        user          TEXT NOT NULL,
        user_handle   BLOB NOT NULL,
        rp_id         TEXT NOT NULL,
        public_key    BLOB NOT NULL,
        sign_count    INTEGER NOT NULL CHECK (sign_count >= 0),
        device_id     BLOB,
        created_at    REAL NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX credentials_user ON credentials (user)",
    """
    CREATE TABLE revocation (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        highest_serial INTEGER NOT NULL,
        data           BLOB NOT NULL,
        installed_at   REAL NOT NULL
    )
    """,
    """
    CREATE TABLE audit (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        time   REAL NOT NULL,
        event  TEXT NOT NULL,
        fields TEXT NOT NULL
    )
    """,
)

#: ``_MIGRATIONS[v]`` takes a database from version ``v - 1`` to ``v``; they run in order, in
#: one transaction with the version bump, so a crash mid-migration leaves the old version.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: _SCHEMA_V1,
    2: ("CREATE INDEX audit_time ON audit (time)",),
    3: (
        """
        CREATE TABLE payment_requests (
            request_id TEXT PRIMARY KEY,
            challenge  BLOB NOT NULL UNIQUE,
            user       TEXT NOT NULL,
            payment    BLOB NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE payments (
            payment_id    TEXT PRIMARY KEY,
            user          TEXT NOT NULL,
            credential_id BLOB NOT NULL,
            currency      TEXT NOT NULL,
            amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
            payment       BLOB NOT NULL,
            method        TEXT NOT NULL,
            assurance     TEXT NOT NULL,
            sign_count    INTEGER NOT NULL,
            authorised_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
        "CREATE INDEX payments_user_time ON payments (user, currency, authorised_at)",
    ),
}
assert sorted(_MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


class SQLiteStore:
    """``Store`` on one SQLite file (or ``":memory:"``), safe for several processes at once.

    Files run in WAL mode. One connection per ``SQLiteStore``; a lock serialises threads
    sharing it, and SQLite's own locking (``BEGIN IMMEDIATE``, a busy timeout) serialises
    processes.

    ``durability`` says what a commit survives:

    * ``"full"`` (default, ``synchronous=FULL``): the WAL is fsync'd at every commit, so once
      a call returns, a used challenge or a raised counter survives a process crash, an OS
      crash and a power cut.
    * ``"normal"`` (``synchronous=NORMAL``): commits are not fsync'd (only checkpoints are).
      They survive a crash of the verifier process, but the last transactions before an OS
      crash or power cut can be lost, and with them state the verifier already acted on: a
      challenge redeemed in the last moments before the cut is unused again (the captured
      assertion could be accepted once more within the challenge's TTL), and a counter can
      fall back to an earlier value (so the counter check would accept an assertion it had
      already seen). Use it only where losing that window is acceptable, or where the disk
      cache is battery-backed. The database itself is never corrupted in either mode.

    ``":memory:"`` stores ignore ``durability``: nothing survives the process.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        timeout: float = 10.0,
        durability: Durability = "full",
    ) -> None:
        durability = check_durability(durability)
        self._lock = threading.RLock()
        self._path = str(path)
        self._durability: Durability = durability
        # Depth of atomic() blocks on this connection (guarded by _lock, which atomic holds).
        self._atomic_depth = 0
        try:
            # isolation_level=None: we issue BEGIN ourselves, so each transaction is explicit.
            self._conn = sqlite3.connect(
                self._path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise storage_error(exc) from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self._path != ":memory:" and not self._path.startswith("file::memory:"):
                mode = self._switch_to_wal(timeout)
                if mode is None or str(mode[0]).lower() != "wal":
                    raise VerifierError(Reason.STORAGE, "could not switch the database to WAL")
            pragma, level = _SYNCHRONOUS[durability]
            self._conn.execute(f"PRAGMA synchronous = {pragma}")
            if self._conn.execute("PRAGMA synchronous").fetchone()[0] != level:
                raise VerifierError(Reason.STORAGE, f"could not set synchronous = {pragma}")
            self._open_schema()
        except VerifierError:
            self._conn.close()
            raise
        except (sqlite3.Error, OverflowError) as exc:
            self._conn.close()
            raise storage_error(exc) from exc

    # -- plumbing ------------------------------------------------------------------------

    def _switch_to_wal(self, timeout: float) -> Any:
        """``PRAGMA journal_mode = WAL``, retried while another opener holds the file.

        SQLite answers the journal-mode change with SQLITE_BUSY at once, without calling the
        busy handler, when another connection is opening the same new file (measured: 10 of
        1,200 concurrent first opens failed with "database is locked"), so the wait the busy
        timeout gives every other statement is given here by hand, up to the same timeout.
        """
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                return self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _open_schema(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if not 0 <= version < SCHEMA_VERSION:
            raise VerifierError(
                Reason.STORAGE,
                f"database schema version {version}; this verifier understands {SCHEMA_VERSION}",
            )
        # Create or migrate forward, but only once even when several processes open the
        # file at the same moment (the write lock makes the others wait, then re-read).
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if not 0 <= version < SCHEMA_VERSION:
                raise VerifierError(Reason.STORAGE, f"database schema version {version}")
            if version == 0:
                existing = self._conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
                if existing:
                    raise VerifierError(
                        Reason.STORAGE, "the file holds tables but no verifier schema version"
                    )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    self._conn.execute(statement)
            # PRAGMA takes no bound parameters; SCHEMA_VERSION is a module constant int.
            self._conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")

    @property
    def schema_version(self) -> int:
        """The schema version of the open database (always ``SCHEMA_VERSION`` once open)."""
        with self._errors():
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def durability(self) -> Durability:
        return self._durability

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Run the block's store calls in ONE write transaction, committed once at the end.

        ``BEGIN IMMEDIATE`` takes the database's write lock up front and holds it (and this
        store's thread lock) until the block exits, so the calls inside cannot interleave
        with another thread's or process's. Inside, the store's methods do not commit on
        their own; a method that fails undoes only its own writes (a savepoint). Nested
        ``atomic()`` blocks join the outermost one.

        The block's writes are committed however it exits, by an exception too: everything
        the verifier writes in it (a burned challenge, a raised counter, an audit row) must
        stay written whatever the outcome, exactly as if each call had committed by itself.
        A refused assertion therefore still uses up its challenge. Only a crash before the
        COMMIT loses the block's writes, and then the caller was never told the result. A
        failed COMMIT raises ``VerifierError(STORAGE)`` unless an exception is already on
        its way out (the refusal is not masked).
        """
        with self._lock:
            if self._atomic_depth:
                self._atomic_depth += 1
                try:
                    yield
                finally:
                    self._atomic_depth -= 1
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
            self._atomic_depth = 1
            try:
                yield
            except BaseException:
                self._atomic_depth = 0
                with contextlib.suppress(VerifierError):
                    self._commit()
                raise
            self._atomic_depth = 0
            self._commit()

    def _commit(self) -> None:
        if not self._conn.in_transaction:
            # SQLite rolls a transaction back by itself after some errors (I/O, disk full):
            # the block's writes are gone, which the caller must hear about.
            raise VerifierError(Reason.STORAGE, "the transaction was rolled back by SQLite")
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise storage_error(exc) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so read-then-write
        sequences cannot interleave with another process's. Inside ``atomic()`` a savepoint
        instead: all-or-nothing for this call, committed with the enclosing block."""
        with self._lock:
            if self._atomic_depth:
                try:
                    self._conn.execute("SAVEPOINT store_call")
                except sqlite3.Error as exc:
                    raise storage_error(exc) from exc
                try:
                    yield self._conn
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK TO store_call")
                        self._conn.execute("RELEASE store_call")
                    raise
                try:
                    self._conn.execute("RELEASE store_call")
                except sqlite3.Error as exc:
                    raise storage_error(exc) from exc
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise storage_error(exc) from exc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except VerifierError:
                raise
            except (sqlite3.Error, OverflowError) as exc:
                raise storage_error(exc) from exc

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- challenges ----------------------------------------------------------------------

    def insert_challenge(self, value: bytes, user: str, purpose: str, expires_at: float) -> None:
        value = check_bytes("value", value)
        user = check_str("user", user)
        purpose = check_str("purpose", purpose)
        expires_at = check_time("expires_at", expires_at)
        with self._errors():
            try:
                self._conn.execute(
                    "INSERT INTO challenges (value, user, purpose, expires_at, used)"
                    " VALUES (?, ?, ?, ?, 0)",
                    (value, user, purpose, expires_at),
                )
            except sqlite3.IntegrityError as exc:
                # 32 random bytes colliding means a broken RNG: refuse, never reuse.
                raise VerifierError(Reason.STORAGE, "challenge value already stored") from exc

    def use_challenge(self, value: bytes) -> tuple[str, str, float, bool] | None:
        value = check_bytes("value", value)
        if not _HAS_RETURNING:
            return self._use_challenge_two_statements(value)
        # On the verify path: a plain try, not the _errors() context manager (same effect).
        with self._lock:
            try:
                # The conditional UPDATE is the single point of truth: only one caller can
                # flip used 0 -> 1, whatever the number of processes. One statement is atomic
                # on its own, so no explicit transaction is needed. fetchall: the statement
                # must run to completion before its autocommit happens.
                rows = self._conn.execute(_REDEEM_SQL, (value,)).fetchall()
                won = bool(rows)
                if not won:
                    # Unknown or already used: which one is only needed for the refusal.
                    rows = self._conn.execute(
                        "SELECT user, purpose, expires_at FROM challenges WHERE value = ?",
                        (value,),
                    ).fetchall()
            except (sqlite3.Error, OverflowError) as exc:
                raise storage_error(exc) from exc
        if not rows:
            return None
        row = rows[0]
        return str(row[0]), str(row[1]), float(row[2]), not won

    def _use_challenge_two_statements(self, value: bytes) -> tuple[str, str, float, bool] | None:
        with self._errors(), self._transaction() as conn:
            won = conn.execute(
                "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0", (value,)
            ).rowcount
            row = conn.execute(
                "SELECT user, purpose, expires_at FROM challenges WHERE value = ?", (value,)
            ).fetchone()
        if row is None:
            return None
        return str(row[0]), str(row[1]), float(row[2]), won != 1

    def purge_expired_challenges(self, now: float) -> int:
        now = check_time("now", now)
        with self._errors():
            return int(
                self._conn.execute("DELETE FROM challenges WHERE expires_at < ?", (now,)).rowcount
            )

    def count_open_challenges(self, user: str, now: float) -> int:
        user = check_str("user", user)
        now = check_time("now", now)
        with self._errors():
            row = self._conn.execute(
                "SELECT count(*) FROM challenges WHERE user = ? AND used = 0 AND expires_at >= ?",
                (user, now),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    # -- credentials ---------------------------------------------------------------------

    def add_credential(self, rec: CredentialRecord, *, first_for_user: bool = False) -> None:
        params = check_record(rec)
        # One statement: SQLite runs it under the database's write lock, so "the user has no
        # credential yet" and the insert cannot be separated by another writer.
        only_new_user = " WHERE NOT EXISTS (SELECT 1 FROM credentials WHERE user = ?)"
        with self._errors():
            try:
                cur = self._conn.execute(
                    "INSERT INTO credentials (credential_id, user, user_handle, rp_id,"
                    " public_key, sign_count, device_id, created_at)"
                    " SELECT ?, ?, ?, ?, ?, ?, ?, ?" + (only_new_user if first_for_user else ""),
                    (*params, rec.user) if first_for_user else params,
                )
            except sqlite3.IntegrityError as exc:
                raise VerifierError(
                    Reason.CREDENTIAL_EXISTS, "a credential with this id is registered"
                ) from exc
            if cur.rowcount != 1:
                raise VerifierError(
                    Reason.USER_ALREADY_REGISTERED, "this user already has a credential"
                )

    _COLUMNS = (
        "credential_id, user, user_handle, rp_id, public_key, sign_count, device_id, created_at"
    )

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None:
        credential_id = check_bytes("credential_id", credential_id)
        with self._lock:
            try:
                row = self._conn.execute(_CREDENTIAL_SQL, (credential_id,)).fetchone()
            except (sqlite3.Error, OverflowError) as exc:
                raise storage_error(exc) from exc
        return None if row is None else record_from_row(row)

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        credential_id = check_bytes("credential_id", credential_id)
        old = check_int("old", old)
        new = check_int("new", new)
        with self._lock:
            try:
                changed = self._conn.execute(_COUNTER_CAS_SQL, (new, credential_id, old)).rowcount
            except (sqlite3.Error, OverflowError) as exc:
                raise storage_error(exc) from exc
        return changed == 1

    def credentials_for_user(self, user: str) -> list[CredentialRecord]:
        user = check_str("user", user)
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM credentials WHERE user = ?"  # noqa: S608
                " ORDER BY created_at, credential_id",
                (user,),
            ).fetchall()
            return [record_from_row(r) for r in rows]

    # -- revocation ----------------------------------------------------------------------

    def get_revocation_state(self) -> tuple[int, bytes] | None:
        with self._errors():
            row = self._conn.execute(
                "SELECT highest_serial, data FROM revocation WHERE id = 1"
            ).fetchone()
            return None if row is None else (int(row[0]), bytes(row[1]))

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        serial = check_int("serial", serial)
        data = check_bytes("data", data)
        with self._errors(), self._transaction() as conn:
            # Re-check under the write lock: two installers that both read serial N must not
            # let the later, lower list overwrite the higher one.
            row = conn.execute(
                "SELECT highest_serial, data FROM revocation WHERE id = 1"
            ).fetchone()
            if row is not None:
                current, current_data = int(row[0]), bytes(row[1])
                if serial < current:
                    raise VerifierError(
                        Reason.REVOCATION_LIST_ROLLBACK,
                        f"serial {serial} is lower than the highest seen ({current})",
                    )
                if serial == current and data != current_data:
                    raise VerifierError(
                        Reason.REVOCATION_LIST_ROLLBACK,
                        f"serial {serial} already installed with different content",
                    )
            conn.execute(
                "INSERT INTO revocation (id, highest_serial, data, installed_at)"
                " VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " highest_serial = excluded.highest_serial, data = excluded.data,"
                " installed_at = excluded.installed_at",
                (serial, data, time.time()),
            )

    # -- audit ---------------------------------------------------------------------------

    def audit(self, event: str, **fields: str | int | float | bool | None) -> None:
        event, text = audit_text(event, fields)
        with self._lock:
            try:
                self._conn.execute(_AUDIT_SQL, (time.time(), event, text))
            except (sqlite3.Error, OverflowError) as exc:
                raise storage_error(exc) from exc

    def audit_events(self, limit: int = 100) -> list[tuple[float, str, dict[str, Any]]]:
        """The newest ``limit`` audit events, oldest first, as ``(time, event, fields)``."""
        limit = check_int("limit", limit)
        with self._errors():
            rows = self._conn.execute(
                "SELECT time, event, fields FROM audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return audit_rows(rows)

    def purge_audit(self, before: float) -> int:
        """Retention: delete audit events recorded before ``before``; returns how many went."""
        before = check_time("before", before)
        with self._errors():
            return int(self._conn.execute("DELETE FROM audit WHERE time < ?", (before,)).rowcount)

    # -- payments ------------------------------------------------------------------------

    def add_payment_request(
        self, request_id: str, challenge: bytes, user: str, payment: bytes, created_at: float
    ) -> None:
        params = (
            check_str("request_id", request_id),
            check_bytes("challenge", challenge),
            check_str("user", user),
            check_bytes("payment", payment),
            check_time("created_at", created_at),
        )
        with self._errors():
            try:
                self._conn.execute(
                    "INSERT INTO payment_requests (request_id, challenge, user, payment,"
                    " created_at) VALUES (?, ?, ?, ?, ?)",
                    params,
                )
            except sqlite3.IntegrityError as exc:
                raise VerifierError(Reason.STORAGE, "payment request already stored") from exc

    def get_payment_request(self, request_id: str) -> tuple[bytes, str, bytes, float] | None:
        request_id = check_str("request_id", request_id)
        with self._errors():
            row = self._conn.execute(
                "SELECT challenge, user, payment, created_at FROM payment_requests"
                " WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        return None if row is None else (bytes(row[0]), str(row[1]), bytes(row[2]), float(row[3]))

    def add_payment(self, rec: PaymentRecord, *, limit: int | None, since: float) -> int | None:
        params = check_payment_record(rec)
        since = check_time("since", since)
        # BEGIN IMMEDIATE (or the enclosing atomic block) holds the write lock from the sum
        # to the insert: no other process can add a payment in between.
        with self._errors(), self._transaction() as conn:
            total = self._total(conn, rec.user, rec.currency, since)
            if over_limit(total, rec.amount_micros, limit):
                return None
            try:
                conn.execute(
                    f"INSERT INTO payments ({_PAYMENT_COLUMNS})"  # noqa: S608
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
            except sqlite3.IntegrityError as exc:
                raise VerifierError(Reason.STORAGE, "payment id already recorded") from exc
        return total + rec.amount_micros

    @staticmethod
    def _total(conn: sqlite3.Connection, user: str, currency: str, since: float) -> int:
        row = conn.execute(
            "SELECT coalesce(sum(amount_micros), 0) FROM payments"
            " WHERE user = ? AND currency = ? AND authorised_at >= ?",
            (user, currency, since),
        ).fetchone()
        return int(row[0])

    def payment_total(self, user: str, currency: str, since: float) -> int:
        user = check_str("user", user)
        currency = check_str("currency", currency)
        since = check_time("since", since)
        with self._errors():
            return self._total(self._conn, user, currency, since)

    def get_payment(self, payment_id: str) -> PaymentRecord | None:
        payment_id = check_str("payment_id", payment_id)
        with self._errors():
            row = self._conn.execute(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?",  # noqa: S608
                (payment_id,),
            ).fetchone()
        return None if row is None else payment_from_row(row)
