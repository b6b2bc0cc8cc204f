"""``PostgresStore``: the verifier's state in a PostgreSQL database shared by several verifier
processes (psycopg 3 and psycopg-pool: the ``[postgres]`` extra).

Same interface and semantics as :class:`~verifier.store.sqlite.SQLiteStore` (see
:mod:`verifier.store.base`); what differs is only how the promises are kept:

* a challenge is redeemed by ONE statement (a conditional ``UPDATE`` inside a CTE): of several
  processes racing on one challenge, PostgreSQL's row lock lets exactly one flip it, and the
  others re-check the row after that one commits and see it used;
* the counter is a compare-and-set ``UPDATE ... WHERE sign_count = old`` (same re-check);
* a revocation list is installed by one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that
  only moves the serial up, so two installers cannot let the lower list win;
* inserts use ``ON CONFLICT DO NOTHING`` and report a taken key as a typed refusal, so no
  expected refusal aborts an enclosing ``atomic()`` transaction.

The tables live in the first schema of the connection's ``search_path`` (``public`` unless
the URL says otherwise, e.g. ``?options=-csearch_path%3Dverifier``); give the verifier a
database or schema of its own.

Every psycopg or pool failure (server down, connection lost, lock or statement timeout) is
``VerifierError(Reason.STORAGE)``: the verifier fails closed. Connections come from a pool
shared by the threads of one process; open the store in each process (after any fork), never
before forking.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

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
)

__all__ = ["PostgresStore"]

# Version 1: the same tables as SQLite's, in PostgreSQL types ("user" is a reserved word).
_SCHEMA_V1 = (
    """
    CREATE TABLE challenges (
        value      bytea PRIMARY KEY,
        "user"     text NOT NULL,
        purpose    text NOT NULL,
        expires_at double precision NOT NULL,
        used       boolean NOT NULL DEFAULT false
    )
    """,
    "CREATE INDEX challenges_expires ON challenges (expires_at)",
    """
    CREATE TABLE credentials (
        credential_id bytea PRIMARY KEY,
        "user"        text NOT NULL,
        user_handle   bytea NOT NULL,
        rp_id         text NOT NULL,
        public_key    bytea NOT NULL,
        sign_count    bigint NOT NULL CHECK (sign_count >= 0),
        device_id     bytea,
        created_at    double precision NOT NULL
    )
    """,
    'CREATE INDEX credentials_user ON credentials ("user")',
    """
    CREATE TABLE revocation (
        id             integer PRIMARY KEY CHECK (id = 1),
        highest_serial bigint NOT NULL,
        data           bytea NOT NULL,
        installed_at   double precision NOT NULL
    )
    """,
    """
    CREATE TABLE audit (
        id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time   double precision NOT NULL,
        event  text NOT NULL,
        fields text NOT NULL
    )
    """,
)

#: ``_MIGRATIONS[v]`` takes a database from version ``v - 1`` to ``v``. They run in one
#: transaction with the version bump (PostgreSQL DDL is transactional), under an advisory
#: lock, so concurrent openers migrate once and a crash mid-way leaves the old version.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: _SCHEMA_V1,
    2: ("CREATE INDEX audit_time ON audit (time)",),
    3: (
        """
        CREATE TABLE payment_requests (
            request_id text PRIMARY KEY,
            challenge  bytea NOT NULL UNIQUE,
            "user"     text NOT NULL,
            payment    bytea NOT NULL,
            created_at double precision NOT NULL
        )
        """,
        """
        CREATE TABLE payments (
            payment_id    text PRIMARY KEY,
            "user"        text NOT NULL,
            credential_id bytea NOT NULL,
            currency      text NOT NULL,
            amount_micros bigint NOT NULL CHECK (amount_micros >= 0),
            payment       bytea NOT NULL,
            method        text NOT NULL,
            assurance     text NOT NULL,
            sign_count    bigint NOT NULL,
            authorised_at double precision NOT NULL
        )
        """,
        'CREATE INDEX payments_user_time ON payments ("user", currency, authorised_at)',
    ),
    # The per-user cap on open challenges counts one user's rows (see the SQLite schema).
    4: ('CREATE INDEX challenges_user ON challenges ("user", expires_at)',),
}
assert sorted(_MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))

_VERSION_TABLE = "verifier_schema"
# Any constant works: it only has to differ from other applications' advisory locks, and it
# is combined with the schema name so that verifiers in different schemas do not wait.
_LOCK_CLASS = 0x64620001

_PAYMENT_COLUMNS = PAYMENT_COLUMNS.format(user='"user"')
# Serialises the daily-total check and insert of one user's payments across processes (an
# advisory transaction lock keyed by the user; READ COMMITTED alone would let two sums race).
_PAYMENT_LOCK_CLASS = 0x64620002

_CREDENTIAL_COLUMNS = (
    'credential_id, "user", user_handle, rp_id, public_key, sign_count, device_id, created_at'
)

# One statement redeems the challenge: the UPDATE flips used only if it is still false (a
# racing redeemer waits on the row lock, then re-checks the committed row and loses); the
# second branch reports a known-but-used challenge, read from the statement's snapshot
# (user, purpose and expiry never change once written).
_REDEEMED = """
    WITH won AS (
        UPDATE challenges SET used = true WHERE value = %(v)s AND NOT used
        RETURNING "user", purpose, expires_at
    ), found AS (
        SELECT "user", purpose, expires_at, false AS used FROM won
        UNION ALL
        SELECT "user", purpose, expires_at, true FROM challenges
        WHERE value = %(v)s AND NOT EXISTS (SELECT 1 FROM won)
    )
"""
_USE_CHALLENGE = _REDEEMED + 'SELECT "user", purpose, expires_at, used FROM found'  # noqa: S608

# The same redeem and the credential read in one statement, one round trip: always exactly
# one row, the challenge's columns NULL when it is unknown, the credential's when it is.
_USE_CHALLENGE_AND_GET_CREDENTIAL = f"""{_REDEEMED}
    SELECT found."user", found.purpose, found.expires_at, found.used,
        {", ".join("cr." + c.strip() for c in _CREDENTIAL_COLUMNS.split(","))}
    FROM (SELECT) AS one
    LEFT JOIN found ON true
    LEFT JOIN credentials AS cr ON cr.credential_id = %(c)s
"""  # noqa: S608 - constants only

# The serial only moves up; the same serial is accepted again only with the same bytes.
_SET_REVOCATION = """
    INSERT INTO revocation (id, highest_serial, data, installed_at)
    VALUES (1, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET
        highest_serial = excluded.highest_serial,
        data = excluded.data,
        installed_at = excluded.installed_at
    WHERE revocation.highest_serial < excluded.highest_serial
       OR (revocation.highest_serial = excluded.highest_serial AND revocation.data = excluded.data)
    RETURNING highest_serial
"""

_SYNCHRONOUS_COMMIT = {"full": "on", "normal": "off"}

_INSERT_AUDIT = "INSERT INTO audit (time, event, fields) VALUES (%s, %s, %s)"


def _storage_error(exc: BaseException) -> VerifierError:
    # The first line only: psycopg's DETAIL lines can quote key values from the table.
    text = str(exc).strip().splitlines()
    return VerifierError(Reason.STORAGE, f"{type(exc).__name__}: {text[0] if text else ''}")


class PostgresStore:
    """``Store`` on a PostgreSQL database, safe for many verifier processes at once.

    ``conninfo`` is a libpq URI or key/value string (``postgresql://user@host/db``, a unix
    socket as ``postgresql:///db?host=/run/postgresql``). ``timeout`` bounds the wait for a
    pooled connection, a row lock held by another verifier, and any one statement; past it
    the call fails with ``STORAGE``. ``pool_size`` is the most connections this process
    opens.

    ``durability`` says what a commit survives:

    * ``"full"`` (default, ``synchronous_commit=on``): a call returns only once its commit
      is flushed to the server's WAL on disk, so a used challenge or a raised counter
      survives a crash of the verifier, of the server and of its machine. The server must
      run with ``fsync=on``; a server that does not is refused on open. PostgreSQL flushes
      the commits of concurrent transactions together (group commit), so many verifier
      processes share each flush.
    * ``"normal"`` (``synchronous_commit=off``): commits return before the flush. They
      survive a crash of the verifier process, but a crash of the database server or its
      machine can lose the last few hundred milliseconds of commits, with the same
      consequences as SQLite's ``"normal"``: a redeemed challenge is unused again, a counter
      falls back. The database itself stays consistent.

    ``atomic()`` groups calls into one transaction on one connection, per thread.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        timeout: float = 10.0,
        durability: Durability = "full",
        pool_size: int = 10,
    ) -> None:
        durability = check_durability(durability)
        timeout = check_time("timeout", timeout)
        if timeout <= 0:
            raise VerifierError(Reason.MALFORMED, "timeout must be positive")
        if type(pool_size) is not int or pool_size < 1:
            raise VerifierError(Reason.MALFORMED, "pool_size must be a positive integer")
        if not isinstance(conninfo, str):
            raise VerifierError(Reason.MALFORMED, "conninfo must be a str")
        try:
            params: dict[str, Any] = conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise VerifierError(Reason.MALFORMED, "not a PostgreSQL connection string") from None
        # libpq counts connect_timeout in whole seconds (and treats 1 as 2).
        params.setdefault("connect_timeout", max(2, round(timeout)))
        self._durability: Durability = durability
        self._timeout = timeout
        self._params = params
        self._settings = {
            "synchronous_commit": _SYNCHRONOUS_COMMIT[durability],
            "lock_timeout": f"{int(timeout * 1000)}ms",
            "statement_timeout": f"{int(timeout * 1000)}ms",
            # A verifier stuck inside atomic() must not hold row locks for ever.
            "idle_in_transaction_session_timeout": f"{int(timeout * 1000)}ms",
        }
        # The connection and depth of this thread's atomic() block, if any.
        self._local = threading.local()
        self._closed = False
        try:
            # Schema first, on a connection of its own: an unreachable server or a foreign
            # database fails here, fast and with the server's own message.
            with psycopg.connect(**params, autocommit=True) as conn:
                self._configure(conn)
                self._open_schema(conn)
        except VerifierError:
            raise
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc
        try:
            self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
                kwargs={**params, "autocommit": True},
                min_size=1,
                max_size=pool_size,
                open=False,
                configure=self._configure,
                timeout=timeout,
                name="devicebio-verifier",
            )
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                self._pool.close()
            raise _storage_error(exc) from exc

    # -- plumbing ------------------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Per-connection settings, checked: a server that ignores them is refused."""
        names = list(self._settings)
        conn.execute(
            "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in names),
            [x for name in names for x in (name, self._settings[name])],
        )
        row = conn.execute(
            "SELECT current_setting('synchronous_commit'), current_setting('fsync')"
        ).fetchone()
        if row is None or row[0] != self._settings["synchronous_commit"]:
            raise VerifierError(Reason.STORAGE, "could not set synchronous_commit")
        if self._durability == "full" and row[1] != "on":
            raise VerifierError(
                Reason.STORAGE,
                "the server runs with fsync=off: commits would not survive a power cut",
            )

    def _open_schema(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            schema = conn.execute("SELECT current_schema()").fetchone()
            if schema is None or schema[0] is None:
                raise VerifierError(Reason.STORAGE, "the search_path names no existing schema")
            # Concurrent openers of a new or old database wait here for the first one.
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (_LOCK_CLASS,)
            )
            tables = {
                str(r[0])
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = current_schema()"
                ).fetchall()
            }
            if _VERSION_TABLE not in tables:
                if tables:
                    raise VerifierError(
                        Reason.STORAGE,
                        f"schema {schema[0]!r} holds tables but no verifier schema version",
                    )
                conn.execute(
                    f"CREATE TABLE {_VERSION_TABLE} ("
                    " id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)"
                )
                conn.execute(f"INSERT INTO {_VERSION_TABLE} (id, version) VALUES (1, 0)")  # noqa: S608
            row = conn.execute(f"SELECT version FROM {_VERSION_TABLE} WHERE id = 1").fetchone()  # noqa: S608
            version = None if row is None else int(row[0])
            if version is None or not 0 <= version <= SCHEMA_VERSION:
                raise VerifierError(
                    Reason.STORAGE,
                    f"database schema version {version}; this verifier understands"
                    f" {SCHEMA_VERSION}",
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)  # type: ignore[call-overload]
            if version != SCHEMA_VERSION:
                conn.execute(
                    f"UPDATE {_VERSION_TABLE} SET version = %s WHERE id = 1",  # noqa: S608
                    (SCHEMA_VERSION,),
                )

    @property
    def durability(self) -> Durability:
        return self._durability

    @property
    def schema_version(self) -> int:
        """The schema version of the open database (always ``SCHEMA_VERSION`` once open)."""
        with self._conn() as conn:
            row = conn.execute(f"SELECT version FROM {_VERSION_TABLE} WHERE id = 1").fetchone()  # noqa: S608
        if row is None:
            raise VerifierError(Reason.STORAGE, "the schema version row is missing")
        return int(row[0])

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """This thread's atomic() connection, else a pooled one in autocommit: each
        statement then commits on its own, in one round trip."""
        held = getattr(self._local, "conn", None)
        try:
            if held is not None:
                yield held
                return
            with self._pool.connection() as conn:
                yield conn
        except VerifierError:
            raise
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """:meth:`_conn` as a cursor; inside atomic() the block's one cursor, since a new
        cursor per statement costs about 15 us of client CPU (measured on the verify path's
        statements: 61 us a statement through ``conn.execute``, 46 us through one cursor)."""
        with self._conn() as conn:
            held = getattr(self._local, "cur", None)
            yield conn.cursor() if held is None else held

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Run the block's store calls in ONE transaction, committed once at the end.

        The calls inside use one pooled connection (this thread's) and do not commit on
        their own; nested ``atomic()`` blocks join the outermost one. Unlike SQLite's
        ``BEGIN IMMEDIATE`` nothing is locked up front: each row is locked by the statement
        that writes it (a redeemed challenge, a raised counter) until the block commits, so
        another verifier touching the same row waits for the outcome and re-checks it.

        As with ``SQLiteStore.atomic``, the block's writes are committed however it exits, by
        an exception too, so a refused assertion still uses up its challenge. The store's
        own refusals (a taken id, a revocation rollback) write nothing and leave the
        transaction intact; a failed statement (server gone, timeout) aborts the whole
        block, its writes are rolled back and every later call in it raises ``STORAGE``,
        as does the exit unless an exception is already on its way out.

        Audit rows written in the block are held and sent with its COMMIT, in the same
        network round trip (or before any read of the audit trail inside the block): a
        verification then costs BEGIN, one round trip per statement whose answer it needs,
        and COMMIT.
        """
        local = self._local
        if getattr(local, "conn", None) is not None:
            local.depth += 1
            try:
                yield
            finally:
                local.depth -= 1
            return
        try:
            with self._pool.connection() as conn:
                cur = conn.cursor()
                cur.execute("BEGIN")
                local.conn, local.cur, local.depth, local.audits = conn, cur, 1, []
                try:
                    yield
                except BaseException:
                    local.conn = local.cur = None
                    with contextlib.suppress(VerifierError):
                        self._commit(conn, local.audits)
                    raise
                local.conn = local.cur = None
                self._commit(conn, local.audits)
        except VerifierError:
            raise
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc

    @staticmethod
    def _commit(conn: psycopg.Connection[Any], audits: list[tuple[float, str, str]]) -> None:
        status = conn.info.transaction_status
        if status == TransactionStatus.INERROR:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            raise VerifierError(
                Reason.STORAGE, "a statement failed: the transaction was rolled back"
            )
        if status != TransactionStatus.INTRANS:
            raise VerifierError(Reason.STORAGE, "the connection lost its transaction")
        try:
            if audits:
                # The block's audit rows travel with its COMMIT, in one round trip: pipeline
                # mode sends the (server-side prepared) INSERTs and the COMMIT, then waits
                # once. It replaced one client-bound text message "INSERT ...; COMMIT", which
                # the server parsed and planned afresh each time: 240-255 us of server CPU
                # per verify block against 280-350 us (2,000 blocks, three paired runs).
                with conn.pipeline():
                    conn.cursor().executemany(_INSERT_AUDIT, audits)
                    conn.execute("COMMIT")
            else:
                conn.execute("COMMIT")
        except psycopg.Error as exc:
            # Nothing or everything was committed, and which is unknown if the connection
            # dropped during COMMIT: either way the caller hears STORAGE, never "done".
            with contextlib.suppress(psycopg.Error):
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
            raise _storage_error(exc) from exc
        finally:
            audits.clear()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- challenges ----------------------------------------------------------------------

    def insert_challenge(self, value: bytes, user: str, purpose: str, expires_at: float) -> None:
        value = check_bytes("value", value)
        user = check_str("user", user)
        purpose = check_str("purpose", purpose)
        expires_at = check_time("expires_at", expires_at)
        with self._conn() as conn:
            cur = conn.execute(
                'INSERT INTO challenges (value, "user", purpose, expires_at, used)'
                " VALUES (%s, %s, %s, %s, false) ON CONFLICT (value) DO NOTHING",
                (value, user, purpose, expires_at),
            )
            if cur.rowcount != 1:
                # 32 random bytes colliding means a broken RNG: refuse, never reuse.
                raise VerifierError(Reason.STORAGE, "challenge value already stored")

    def use_challenge(self, value: bytes) -> ChallengeRow | None:
        value = check_bytes("value", value)
        with self._cursor() as cur:
            row = cur.execute(_USE_CHALLENGE, {"v": value}).fetchone()
        if row is None:
            return None
        return str(row[0]), str(row[1]), float(row[2]), bool(row[3])

    def use_challenge_and_get_credential(
        self, value: bytes, credential_id: bytes
    ) -> tuple[ChallengeRow | None, CredentialRecord | None]:
        """``use_challenge`` and ``get_credential`` in one statement (see
        :func:`verifier.store.base.use_challenge_and_get_credential`)."""
        value = check_bytes("value", value)
        credential_id = check_bytes("credential_id", credential_id)
        with self._cursor() as cur:
            row = cur.execute(
                _USE_CHALLENGE_AND_GET_CREDENTIAL, {"v": value, "c": credential_id}
            ).fetchone()
        if row is None:
            raise VerifierError(Reason.STORAGE, "the redeem statement returned no row")
        found = None if row[0] is None else (str(row[0]), str(row[1]), float(row[2]), bool(row[3]))
        return found, None if row[4] is None else record_from_row(row[4:])

    def purge_expired_challenges(self, now: float) -> int:
        now = check_time("now", now)
        with self._conn() as conn:
            return int(
                conn.execute("DELETE FROM challenges WHERE expires_at < %s", (now,)).rowcount
            )

    def count_open_challenges(self, user: str, now: float) -> int:
        user = check_str("user", user)
        now = check_time("now", now)
        with self._conn() as conn:
            row = conn.execute(
                'SELECT count(*) FROM challenges WHERE "user" = %s AND NOT used'
                " AND expires_at >= %s",
                (user, now),
            ).fetchone()
        return int(row[0]) if row is not None else 0

    # -- credentials ---------------------------------------------------------------------

    def add_credential(self, rec: CredentialRecord, *, first_for_user: bool = False) -> None:
        params = check_record(rec)
        with self._conn() as conn, conn.transaction():
            if first_for_user:
                # READ COMMITTED cannot see a racing insert for the same user; a per-user
                # transaction lock serialises them, so exactly one first registration wins.
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (rec.user,))
                taken = conn.execute(
                    'SELECT 1 FROM credentials WHERE "user" = %s LIMIT 1', (rec.user,)
                ).fetchone()
                if taken is not None:
                    raise VerifierError(
                        Reason.USER_ALREADY_REGISTERED, "this user already has a credential"
                    )
            cur = conn.execute(
                f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS})"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (credential_id) DO NOTHING",
                params,
            )
            if cur.rowcount != 1:
                raise VerifierError(
                    Reason.CREDENTIAL_EXISTS, "a credential with this id is registered"
                )

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None:
        credential_id = check_bytes("credential_id", credential_id)
        with self._cursor() as cur:
            row = cur.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE credential_id = %s",  # noqa: S608
                (credential_id,),
            ).fetchone()
        return None if row is None else record_from_row(row)

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        credential_id = check_bytes("credential_id", credential_id)
        old = check_int("old", old)
        new = check_int("new", new)
        with self._cursor() as cur:
            changed = cur.execute(
                "UPDATE credentials SET sign_count = %s"
                " WHERE credential_id = %s AND sign_count = %s",
                (new, credential_id, old),
            ).rowcount
        return changed == 1

    def credentials_for_user(self, user: str) -> list[CredentialRecord]:
        user = check_str("user", user)
        with self._conn() as conn:
            rows = conn.execute(
                f'SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE "user" = %s'  # noqa: S608
                " ORDER BY created_at, credential_id",
                (user,),
            ).fetchall()
        return [record_from_row(r) for r in rows]

    # -- revocation ----------------------------------------------------------------------

    def get_revocation_state(self) -> tuple[int, bytes] | None:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT highest_serial, data FROM revocation WHERE id = 1"
            ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        serial = check_int("serial", serial)
        data = check_bytes("data", data)
        with self._conn() as conn:
            if conn.execute(_SET_REVOCATION, (serial, data, time.time())).fetchone() is not None:
                return
            # Refused by the statement itself; this read only words the refusal.
            row = conn.execute("SELECT highest_serial FROM revocation WHERE id = 1").fetchone()
        current = None if row is None else int(row[0])
        if current is not None and serial < current:
            raise VerifierError(
                Reason.REVOCATION_LIST_ROLLBACK,
                f"serial {serial} is lower than the highest seen ({current})",
            )
        raise VerifierError(
            Reason.REVOCATION_LIST_ROLLBACK,
            f"serial {serial} already installed with different content",
        )

    # -- audit ---------------------------------------------------------------------------

    def audit(self, event: str, **fields: str | int | float | bool | None) -> None:
        event, text = audit_text(event, fields)
        row = (time.time(), event, text)
        held = getattr(self._local, "conn", None)
        if held is not None:
            if held.info.transaction_status == TransactionStatus.INERROR:
                raise VerifierError(Reason.STORAGE, "an earlier statement aborted the block")
            self._local.audits.append(row)  # sent with the block's COMMIT
            return
        with self._conn() as conn:
            conn.execute(_INSERT_AUDIT, row)

    def _flush_audits(self, conn: psycopg.Connection[Any]) -> None:
        """Inside atomic(), send the audit rows held for COMMIT before reading the trail."""
        audits = getattr(self._local, "audits", None)
        if getattr(self._local, "conn", None) is conn and audits:
            conn.cursor().executemany(_INSERT_AUDIT, audits)
            audits.clear()

    def audit_events(self, limit: int = 100) -> list[tuple[float, str, dict[str, Any]]]:
        """The newest ``limit`` audit events, oldest first, as ``(time, event, fields)``."""
        limit = check_int("limit", limit)
        with self._conn() as conn:
            self._flush_audits(conn)
            rows = conn.execute(
                "SELECT time, event, fields FROM audit ORDER BY id DESC LIMIT %s", (limit,)
            ).fetchall()
        return audit_rows(rows)

    def purge_audit(self, before: float) -> int:
        """Retention: delete audit events recorded before ``before``; returns how many went."""
        before = check_time("before", before)
        with self._conn() as conn:
            self._flush_audits(conn)
            return int(conn.execute("DELETE FROM audit WHERE time < %s", (before,)).rowcount)

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
        with self._conn() as conn:
            cur = conn.execute(
                'INSERT INTO payment_requests (request_id, challenge, "user", payment,'
                " created_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                params,
            )
            if cur.rowcount != 1:
                raise VerifierError(Reason.STORAGE, "payment request already stored")

    def get_payment_request(self, request_id: str) -> tuple[bytes, str, bytes, float] | None:
        request_id = check_str("request_id", request_id)
        with self._conn() as conn:
            row = conn.execute(
                'SELECT challenge, "user", payment, created_at FROM payment_requests'
                " WHERE request_id = %s",
                (request_id,),
            ).fetchone()
        return None if row is None else (bytes(row[0]), str(row[1]), bytes(row[2]), float(row[3]))

    def add_payment(self, rec: PaymentRecord, *, limit: int | None, since: float) -> int | None:
        params = check_payment_record(rec)
        since = check_time("since", since)
        # conn.transaction(): BEGIN..COMMIT on a pooled connection, a savepoint inside
        # atomic(); the advisory lock lives until the enclosing transaction ends.
        with self._conn() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_PAYMENT_LOCK_CLASS, rec.user)
            )
            total = self._total(conn, rec.user, rec.currency, since)
            if over_limit(total, rec.amount_micros, limit):
                return None
            cur = conn.execute(
                f"INSERT INTO payments ({_PAYMENT_COLUMNS})"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (payment_id) DO NOTHING",
                params,
            )
            if cur.rowcount != 1:
                raise VerifierError(Reason.STORAGE, "payment id already recorded")
        return total + rec.amount_micros

    @staticmethod
    def _total(conn: psycopg.Connection[Any], user: str, currency: str, since: float) -> int:
        row = conn.execute(
            "SELECT coalesce(sum(amount_micros), 0) FROM payments"
            ' WHERE "user" = %s AND currency = %s AND authorised_at >= %s',
            (user, currency, since),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def payment_total(self, user: str, currency: str, since: float) -> int:
        user = check_str("user", user)
        currency = check_str("currency", currency)
        since = check_time("since", since)
        with self._conn() as conn:
            return self._total(conn, user, currency, since)

    def get_payment(self, payment_id: str) -> PaymentRecord | None:
        payment_id = check_str("payment_id", payment_id)
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE payment_id = %s",  # noqa: S608
                (payment_id,),
            ).fetchone()
        return None if row is None else payment_from_row(row)
