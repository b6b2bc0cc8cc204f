"""The verifier's state: challenges, credentials, the revocation list in force, an audit trail.

``Store`` is the small interface the rest of the verifier codes against; ``SQLiteStore`` is the
embedded default (stdlib ``sqlite3``). A store for a shared server database (PostgreSQL) only
has to keep the same two atomicity promises:

* ``use_challenge`` marks a challenge used with a single conditional ``UPDATE`` so that, of
  several verifier processes racing to redeem one challenge, exactly one sees it fresh;
* ``update_sign_count`` is a compare-and-set, so two assertions carrying the same counter
  value cannot both be accepted.

A store may also offer ``atomic()``, a context manager that groups several calls into one
write transaction (``SQLiteStore.atomic``); the verifier uses it when present, so that one
assertion costs one durable commit instead of one per write. Without it every call commits on
its own, which is equally correct, only slower.

Every ``sqlite3`` failure surfaces as ``VerifierError(Reason.STORAGE)``: the verifier fails
closed when it cannot read or write its state. The audit trail holds event names and short
fields (ids, reasons, counters); callers must never pass biometric data to it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from devicebio.wire import ed25519_public_key_from_cose
from verifier.errors import Reason, VerifierError

__all__ = ["SCHEMA_VERSION", "CredentialRecord", "Durability", "SQLiteStore", "Store"]

#: Stored in ``PRAGMA user_version``; a database with another version is refused on open.
SCHEMA_VERSION = 1

# SQLite stores signed 64-bit integers; anything outside would raise OverflowError mid-query.
_INT_MAX = 2**63 - 1

#: ``"full"``: every commit is fsync'd before it returns. ``"normal"``: WAL with
#: ``synchronous=NORMAL``, see :class:`SQLiteStore`.
Durability = Literal["full", "normal"]
_SYNCHRONOUS = {"full": ("FULL", 2), "normal": ("NORMAL", 1)}

# UPDATE ... RETURNING (SQLite 3.35) redeems a challenge in one statement instead of two.
_HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

_SCHEMA = (
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


@dataclass(frozen=True)
class CredentialRecord:
    """A registered device credential, as the verifier keeps it."""

    credential_id: bytes
    user: str
    user_handle: bytes
    rp_id: str
    public_key: bytes  # COSE_Key, CBOR bytes exactly as registered
    sign_count: int
    device_id: bytes | None
    created_at: float

    @property
    def ed25519_public_key(self) -> bytes:
        """The raw 32-byte Ed25519 key of ``public_key``; raises ``DeviceBioError`` if the
        stored COSE_Key is not exactly OKP/Ed25519/EdDSA in canonical CBOR."""
        return _ed25519_key(self.public_key)


@functools.lru_cache(maxsize=1024)
def _ed25519_key(cose_key: bytes) -> bytes:
    # Decoding and re-encoding the COSE_Key to prove it canonical costs more than the
    # signature check's bookkeeping; the result depends on the bytes alone, so a cache keyed
    # by the exact bytes cannot hand one credential another's key. Failures are not cached.
    return ed25519_public_key_from_cose(cose_key)


@runtime_checkable
class Store(Protocol):
    """What the verifier needs from its storage. Implementations raise only ``VerifierError``."""

    def insert_challenge(self, value: bytes, user: str, purpose: str, expires_at: float) -> None:
        """Remember a freshly issued challenge (unused)."""
        ...

    def use_challenge(self, value: bytes) -> tuple[str, str, float, bool] | None:
        """Atomically mark ``value`` used.

        Returns ``(user, purpose, expires_at, was_already_used)``, or ``None`` if unknown.
        """
        ...

    def purge_expired_challenges(self, now: float) -> int:
        """Delete challenges that expired before ``now``; returns how many went."""
        ...

    def add_credential(self, rec: CredentialRecord) -> None:
        """Store a new credential; ``VerifierError(CREDENTIAL_EXISTS)`` if the id is taken."""
        ...

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None: ...

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        """Set the counter to ``new`` only if it is still ``old``; ``False`` if it was not."""
        ...

    def credentials_for_user(self, user: str) -> list[CredentialRecord]: ...

    def get_revocation_state(self) -> tuple[int, bytes] | None:
        """``(highest serial seen, list bytes in force)``, or ``None`` before the first list."""
        ...

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        """Install a list. Refuses (``REVOCATION_LIST_ROLLBACK``) a lower serial than stored,
        or the same serial with different bytes, atomically against concurrent installers."""
        ...

    def audit(self, event: str, **fields: str | int | float | bool | None) -> None:
        """Append an audit event. Never pass images, templates, embeddings or scores."""
        ...


def _storage_error(exc: BaseException) -> VerifierError:
    return VerifierError(Reason.STORAGE, f"{type(exc).__name__}: {exc}")


def _check_int(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= _INT_MAX:
        raise VerifierError(Reason.MALFORMED, f"{name} must be an integer in [0, 2**63)")
    return value


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise VerifierError(Reason.MALFORMED, f"{name} must be bytes")
    return bytes(value)


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise VerifierError(Reason.MALFORMED, f"{name} must be a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: SQLite cannot store them
        raise VerifierError(Reason.MALFORMED, f"{name} is not valid Unicode text") from exc
    return value


def _check_time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VerifierError(Reason.MALFORMED, f"{name} must be a number")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise VerifierError(Reason.MALFORMED, f"{name} must be finite")
    return result


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
        if not isinstance(durability, str) or durability not in _SYNCHRONOUS:
            raise VerifierError(Reason.MALFORMED, "durability must be 'full' or 'normal'")
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
            raise _storage_error(exc) from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self._path != ":memory:" and not self._path.startswith("file::memory:"):
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
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
            raise _storage_error(exc) from exc

    # -- plumbing ------------------------------------------------------------------------

    def _open_schema(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise VerifierError(
                Reason.STORAGE,
                f"database schema version {version}; this verifier understands {SCHEMA_VERSION}",
            )
        # Version 0 means "never initialised": create the schema, but only once even when
        # several processes open a new file at the same moment (the lock makes one wait).
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version != 0:
                raise VerifierError(Reason.STORAGE, f"database schema version {version}")
            existing = self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchone()[0]
            if existing:
                raise VerifierError(
                    Reason.STORAGE, "the file holds tables but no verifier schema version"
                )
            for statement in _SCHEMA:
                self._conn.execute(statement)
            # PRAGMA takes no bound parameters; SCHEMA_VERSION is a module constant int.
            self._conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")

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
                raise _storage_error(exc) from exc
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
            raise _storage_error(exc) from exc

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
                    raise _storage_error(exc) from exc
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
                    raise _storage_error(exc) from exc
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _storage_error(exc) from exc
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
                raise _storage_error(exc) from exc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except VerifierError:
                raise
            except (sqlite3.Error, OverflowError) as exc:
                raise _storage_error(exc) from exc

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- challenges ----------------------------------------------------------------------

    def insert_challenge(self, value: bytes, user: str, purpose: str, expires_at: float) -> None:
        value = _check_bytes("value", value)
        user = _check_str("user", user)
        purpose = _check_str("purpose", purpose)
        expires_at = _check_time("expires_at", expires_at)
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
        value = _check_bytes("value", value)
        if not _HAS_RETURNING:
            return self._use_challenge_two_statements(value)
        with self._errors():
            # The conditional UPDATE is the single point of truth: only one caller can
            # flip used 0 -> 1, whatever the number of processes. One statement is atomic
            # on its own, so no explicit transaction is needed. fetchall: the statement
            # must run to completion before its autocommit happens.
            rows = self._conn.execute(
                "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0"
                " RETURNING user, purpose, expires_at",
                (value,),
            ).fetchall()
            won = bool(rows)
            if not won:
                # Unknown or already used: which one is only needed for the refusal.
                rows = self._conn.execute(
                    "SELECT user, purpose, expires_at FROM challenges WHERE value = ?", (value,)
                ).fetchall()
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
        now = _check_time("now", now)
        with self._errors():
            return int(
                self._conn.execute("DELETE FROM challenges WHERE expires_at < ?", (now,)).rowcount
            )

    # -- credentials ---------------------------------------------------------------------

    def add_credential(self, rec: CredentialRecord) -> None:
        if not isinstance(rec, CredentialRecord):
            raise VerifierError(Reason.MALFORMED, "rec must be a CredentialRecord")
        params = (
            _check_bytes("credential_id", rec.credential_id),
            _check_str("user", rec.user),
            _check_bytes("user_handle", rec.user_handle),
            _check_str("rp_id", rec.rp_id),
            _check_bytes("public_key", rec.public_key),
            _check_int("sign_count", rec.sign_count),
            None if rec.device_id is None else _check_bytes("device_id", rec.device_id),
            _check_time("created_at", rec.created_at),
        )
        with self._errors():
            try:
                self._conn.execute(
                    "INSERT INTO credentials (credential_id, user, user_handle, rp_id,"
                    " public_key, sign_count, device_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
            except sqlite3.IntegrityError as exc:
                raise VerifierError(
                    Reason.CREDENTIAL_EXISTS, "a credential with this id is registered"
                ) from exc

    @staticmethod
    def _record(row: tuple[Any, ...]) -> CredentialRecord:
        return CredentialRecord(
            credential_id=bytes(row[0]),
            user=str(row[1]),
            user_handle=bytes(row[2]),
            rp_id=str(row[3]),
            public_key=bytes(row[4]),
            sign_count=int(row[5]),
            device_id=None if row[6] is None else bytes(row[6]),
            created_at=float(row[7]),
        )

    _COLUMNS = (
        "credential_id, user, user_handle, rp_id, public_key, sign_count, device_id, created_at"
    )

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None:
        credential_id = _check_bytes("credential_id", credential_id)
        with self._errors():
            row = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM credentials WHERE credential_id = ?",  # noqa: S608
                (credential_id,),
            ).fetchone()
            return None if row is None else self._record(row)

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        credential_id = _check_bytes("credential_id", credential_id)
        old = _check_int("old", old)
        new = _check_int("new", new)
        with self._errors():
            changed = self._conn.execute(
                "UPDATE credentials SET sign_count = ? WHERE credential_id = ? AND sign_count = ?",
                (new, credential_id, old),
            ).rowcount
        return changed == 1

    def credentials_for_user(self, user: str) -> list[CredentialRecord]:
        user = _check_str("user", user)
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM credentials WHERE user = ?"  # noqa: S608
                " ORDER BY created_at, credential_id",
                (user,),
            ).fetchall()
            return [self._record(r) for r in rows]

    # -- revocation ----------------------------------------------------------------------

    def get_revocation_state(self) -> tuple[int, bytes] | None:
        with self._errors():
            row = self._conn.execute(
                "SELECT highest_serial, data FROM revocation WHERE id = 1"
            ).fetchone()
            return None if row is None else (int(row[0]), bytes(row[1]))

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        serial = _check_int("serial", serial)
        data = _check_bytes("data", data)
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
        event = _check_str("event", event)
        for key, value in fields.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise VerifierError(
                    Reason.MALFORMED, f"audit field {key!r} must be str, int, float, bool or None"
                )
        try:
            text = json.dumps(fields, sort_keys=True, allow_nan=False)
        except ValueError as exc:
            raise VerifierError(Reason.MALFORMED, "audit fields must be finite") from exc
        with self._errors():
            self._conn.execute(
                "INSERT INTO audit (time, event, fields) VALUES (?, ?, ?)",
                (time.time(), event, text),
            )

    def audit_events(self, limit: int = 100) -> list[tuple[float, str, dict[str, Any]]]:
        """The newest ``limit`` audit events, oldest first, as ``(time, event, fields)``."""
        limit = _check_int("limit", limit)
        with self._errors():
            rows = self._conn.execute(
                "SELECT time, event, fields FROM audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        out: list[tuple[float, str, dict[str, Any]]] = []
        for t, event, text in reversed(rows):
            try:
                fields = json.loads(text)
            except ValueError as exc:
                raise VerifierError(Reason.STORAGE, "corrupt audit record") from exc
            out.append((float(t), str(event), fields if isinstance(fields, dict) else {}))
        return out
