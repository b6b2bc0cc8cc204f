"""``SQLiteStore``: the embedded default store (stdlib ``sqlite3``), one file or ``":memory:"``.

See :mod:`verifier.store.base` for the interface and the two atomicity promises. Every
``sqlite3`` failure surfaces as ``VerifierError(Reason.STORAGE)``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from verifier.errors import Reason, VerifierError

from .base import (
    PAYMENT_COLUMNS,
    SCHEMA_VERSION,
    ChallengeRow,
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

_T = TypeVar("_T")

_SYNCHRONOUS = {"full": ("FULL", 2), "normal": ("NORMAL", 1)}

# Group commit: at most this many blocks share one commit, so the first of a long queue does
# not wait for ever (each block is a verification, ~0.2-1 ms of CPU; the fsync they share
# costs 0.1 ms to tens of ms depending on the disk).
_MAX_BATCH = 32
# How often a block waiting for its batch's commit checks that the batch is not stranded
# (a backstop only: see SQLiteStore._await).
_RESCUE_SECONDS = 1.0

# UPDATE ... RETURNING (SQLite 3.35) redeems a challenge in one statement instead of two.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# The verify path's statements, one text each (sqlite3 caches their compiled form by text).
_REDEEM_SQL = (
    "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0"
    " RETURNING user, purpose, expires_at"
)
_CREDENTIAL_COLUMNS = (
    "credential_id, user, user_handle, rp_id, public_key, sign_count, device_id, created_at"
)
_CREDENTIAL_SQL = f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE credential_id = ?"  # noqa: S608
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
    # The per-user cap on open challenges counts one user's rows: without this index that
    # count walked every unexpired challenge (18 ms with 20,000 live ones), on every request.
    4: ("CREATE INDEX challenges_user ON challenges (user, expires_at)",),
}
assert sorted(_MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


class _Batch:
    """One write transaction shared by several threads' blocks (group commit)."""

    __slots__ = ("done", "error", "members", "resolved")

    def __init__(self) -> None:
        self.members = 0
        self.resolved = False  # committed, or failed (then ``error``)
        self.error: BaseException | None = None
        # Made by the first member that waits (under the store's lock), set at the commit.
        self.done: threading.Event | None = None


class SQLiteStore:
    """``Store`` on one SQLite file (or ``":memory:"``), safe for several processes at once.

    Files run in WAL mode. One connection per ``SQLiteStore``; a lock serialises threads
    sharing it, and SQLite's own locking (``BEGIN IMMEDIATE``, a busy timeout) serialises
    processes. Threads that write at the same time share commits (group commit, see
    :meth:`atomic`): each still answers only after the commit holding its writes.

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
        # The thread whose atomic() block (or joined call) holds the connection, else None
        # (written under _lock; a thread reading its own id here is inside its own block).
        self._owner: int | None = None
        # Group commit (see atomic): the write transaction several threads' blocks share,
        # and how many threads are queued for _lock (guarded by _gate, not _lock: a thread
        # counts itself before it waits for _lock).
        self._batch: _Batch | None = None
        self._gate = threading.Lock()
        self._queued = 0
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

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Run the block's store calls in ONE write transaction, committed once at the end.

        ``BEGIN IMMEDIATE`` takes the database's write lock up front and holds it until the
        commit; this store's thread lock is held for the whole block, so the calls inside
        cannot interleave with another thread's or process's. Inside, the store's methods do
        not commit on their own; a method that fails undoes only its own writes (a
        savepoint). Nested ``atomic()`` blocks join the outermost one.

        The block's writes are committed however it exits, by an exception too: everything
        the verifier writes in it (a burned challenge, a raised counter, an audit row) must
        stay written whatever the outcome, exactly as if each call had committed by itself.
        A refused assertion therefore still uses up its challenge. Only a crash before the
        COMMIT loses the block's writes, and then the caller was never told the result. A
        failed COMMIT raises ``VerifierError(STORAGE)`` unless an exception is already on
        its way out (the refusal is not masked).

        Group commit: when the block ends while other threads are queued for this store, it
        leaves the transaction open and waits; the next block (or plain call) runs in the
        same transaction, and the last of the queue, or the ``_MAX_BATCH``-th, commits for
        all of them. One fsync then covers several verifications, and every block still
        returns only after the commit that holds its writes (if that commit fails, every
        block in it raises ``STORAGE``: none was acted on). A block with nobody queued
        behind it commits at once, without waiting for anything, so one caller alone pays
        nothing for this. The blocks run one after another in the shared transaction, each
        seeing the writes of those before it, so what commits is exactly what running them
        one by one would have written; since a block's writes stay written whatever its
        outcome, no block's refusal can undo another's writes.
        """
        return self._turn(begin=True)

    @contextlib.contextmanager
    def _turn(self, *, begin: bool) -> Iterator[None]:
        """This thread's turn on the connection. Inside this thread's own block: joins it.
        Else, with a batch open (other threads' writes waiting for their shared commit): a
        member of it, answered after its commit; a plain call must not run inside that
        transaction and answer before the commit. Else ``begin``: a new batch (BEGIN
        IMMEDIATE); not ``begin``: a plain call in autocommit, as without group commit.

        The thread counts itself as queued before it waits for the lock: a block ending
        while someone is queued leaves the commit to them."""
        me = threading.get_ident()
        if self._owner == me:
            yield
            return
        # Free lock (a lone caller): taken at once, nobody to count. Else count this thread
        # as queued while it waits, so the block ending now leaves its commit open for it.
        if not self._lock.acquire(blocking=False):
            with self._gate:
                self._queued += 1
            try:
                self._lock.acquire()
            finally:
                with self._gate:
                    self._queued -= 1
        batch = self._batch
        if batch is not None and not self._conn.in_transaction:
            # SQLite rolled the shared transaction back by itself (an I/O error or a full disk
            # in an earlier member's call): fail that batch now and start afresh, so this
            # thread's writes do not run in autocommit, outside any batch.
            self._commit_batch(batch)
            batch = None
        if batch is None and not begin:
            # Calls nested in this one run straight under its lock (nobody can open a batch
            # meanwhile: the lock is ours).
            self._owner = me
            try:
                yield
            finally:
                self._owner = None
                self._lock.release()
            return
        if batch is None:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._lock.release()
                raise storage_error(exc) from exc
            batch = self._batch = _Batch()
        batch.members += 1
        self._owner = me
        try:
            yield
        except BaseException:
            self._owner = None
            with contextlib.suppress(VerifierError):
                self._leave(batch)
            raise
        self._owner = None
        self._leave(batch)

    def _leave(self, batch: _Batch) -> None:
        """End of a member's block, ``_lock`` held once: commit the batch now unless another
        thread is queued to join it (then that thread, or a later one, commits: the queue is
        counted before the lock is taken, so someone counted always comes); release the lock;
        return once the batch is committed, or raise ``STORAGE`` if it was not."""
        try:
            if not batch.resolved:
                if self._queued == 0 or batch.members >= _MAX_BATCH:
                    self._commit_batch(batch)
                elif batch.done is None:
                    batch.done = threading.Event()
        finally:
            self._lock.release()
        if not batch.resolved:
            self._await(batch)
        if batch.error is not None:
            raise VerifierError(
                Reason.STORAGE, "the shared commit failed: nothing of this call was kept"
            ) from batch.error

    def _await(self, batch: _Batch) -> None:
        done = batch.done
        assert done is not None
        # The queued thread commits; the timeout is only a backstop (a thread that counted
        # itself but never got the lock, e.g. interrupted by a signal): whoever holds the lock
        # is between blocks, where committing is always correct.
        while not done.wait(_RESCUE_SECONDS):
            with self._lock:
                if not batch.resolved:
                    self._commit_batch(batch)

    def _commit_batch(self, batch: _Batch) -> None:
        """COMMIT the shared transaction (``_lock`` held) and wake every member waiting."""
        error: BaseException | None = None
        if not self._conn.in_transaction:
            # SQLite rolls a transaction back by itself after some errors (I/O, disk full):
            # the batch's writes are gone, which every member must hear about.
            error = sqlite3.OperationalError("the transaction was rolled back by SQLite")
        else:
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                error = exc
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
        self._batch = None
        batch.error = error
        batch.resolved = True
        if batch.done is not None:
            batch.done.set()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """All-or-nothing for one call: a savepoint inside ``atomic()`` (the enclosing block,
        or one of its own), so read-then-write sequences hold the write lock throughout and
        a failure undoes only this call. ``sqlite3`` errors become ``STORAGE``."""
        with self.atomic():
            try:
                self._conn.execute("SAVEPOINT store_call")
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
            try:
                yield self._conn
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK TO store_call")
                    self._conn.execute("RELEASE store_call")
                if isinstance(exc, sqlite3.Error | OverflowError):
                    raise storage_error(exc) from exc
                raise
            try:
                self._conn.execute("RELEASE store_call")
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """A call's turn on the connection (see :meth:`_turn`); ``sqlite3`` errors become
        ``STORAGE``."""
        try:
            with self._turn(begin=False):
                yield
        except (sqlite3.Error, OverflowError) as exc:
            raise storage_error(exc) from exc

    def _run(self, statements: Callable[[], _T]) -> _T:
        """``statements()`` as :meth:`_errors` runs a block. On the verify path, inside the
        caller's own ``atomic()`` block (which holds the lock), straight away: a plain try
        instead of the context managers, same effect."""
        if self._owner == threading.get_ident():
            try:
                return statements()
            except (sqlite3.Error, OverflowError) as exc:
                raise storage_error(exc) from exc
        with self._errors():
            return statements()

    def close(self) -> None:
        """Close the connection, committing first a batch whose members await its commit."""
        with self._lock:
            if self._batch is not None:
                self._commit_batch(self._batch)
            with contextlib.suppress(sqlite3.Error):
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

    def use_challenge(self, value: bytes) -> ChallengeRow | None:
        value = check_bytes("value", value)
        return self._run(lambda: self._use(value))

    def _redeem(self, value: bytes) -> tuple[list[Any], bool]:
        # The conditional UPDATE is the single point of truth: only one caller can flip
        # used 0 -> 1, whatever the number of processes. One statement is atomic on its own,
        # so no explicit transaction is needed. fetchall: the statement must run to
        # completion before its autocommit happens.
        rows = self._conn.execute(_REDEEM_SQL, (value,)).fetchall()
        if rows:
            return rows, True
        # Unknown or already used: which one is only needed for the refusal.
        return self._conn.execute(
            "SELECT user, purpose, expires_at FROM challenges WHERE value = ?", (value,)
        ).fetchall(), False

    def use_challenge_and_get_credential(
        self, value: bytes, credential_id: bytes
    ) -> tuple[ChallengeRow | None, CredentialRecord | None]:
        """``use_challenge`` and ``get_credential`` in one call (see
        :func:`verifier.store.base.use_challenge_and_get_credential`). Two statements here:
        one that also returned the credential's columns (a primary-key subquery each in
        ``RETURNING``) measured slower than a second ``SELECT`` on a verifier's cold caches
        (49-71 us against 40-44 us; PostgreSQL's one statement saves a round trip instead)."""
        value = check_bytes("value", value)
        credential_id = check_bytes("credential_id", credential_id)
        return self._run(lambda: (self._use(value), self._credential(credential_id)))

    def _use(self, value: bytes) -> ChallengeRow | None:
        if not _HAS_RETURNING:
            return self._use_challenge_two_statements(value)
        rows, won = self._redeem(value)
        if not rows:
            return None
        row = rows[0]
        return str(row[0]), str(row[1]), float(row[2]), not won

    def _credential(self, credential_id: bytes) -> CredentialRecord | None:
        row = self._conn.execute(_CREDENTIAL_SQL, (credential_id,)).fetchone()
        return None if row is None else record_from_row(row)

    def _use_challenge_two_statements(self, value: bytes) -> tuple[str, str, float, bool] | None:
        with self._transaction() as conn:
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

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None:
        credential_id = check_bytes("credential_id", credential_id)
        return self._run(lambda: self._credential(credential_id))

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        credential_id = check_bytes("credential_id", credential_id)
        old = check_int("old", old)
        new = check_int("new", new)
        params = (new, credential_id, old)
        return self._run(lambda: self._conn.execute(_COUNTER_CAS_SQL, params).rowcount) == 1

    def credentials_for_user(self, user: str) -> list[CredentialRecord]:
        user = check_str("user", user)
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE user = ?"  # noqa: S608
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
        with self._transaction() as conn:
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
        params = (time.time(), event, text)
        self._run(lambda: self._conn.execute(_AUDIT_SQL, params))

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
        with self._transaction() as conn:
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
