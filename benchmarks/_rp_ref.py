"""The peer of ``rp_load.py``: the thinnest honest relying party a team would write with
py_webauthn, as a Starlette app.

``POST /verify {"challenge", "credential"}``: read the credential's key and counter, call
``webauthn.verify_authentication_response``, then in ONE durable transaction burn the
challenge (``UPDATE ... WHERE NOT used``) and compare-and-set the counter; answer only after
the commit. No audit trail, no revocation, no policy, no canonical-encoding checks: what it
leaves out is what devicebio's verifier adds, so the ratio prices those.

Durability is the same as devicebio's stores: PostgreSQL with ``synchronous_commit=on``
(the server default), SQLite in WAL mode with ``synchronous=FULL``. Blocking calls go to
Starlette's thread pool, as in ``verifier.server``.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import webauthn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

RP_ID = "example.com"
ORIGIN = "https://example.com"

SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS challenges (value BLOB PRIMARY KEY, used INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS credentials"
    " (id BLOB PRIMARY KEY, public_key BLOB NOT NULL, sign_count INTEGER NOT NULL)",
)
POSTGRES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS challenges (value bytea PRIMARY KEY, used boolean NOT NULL)",
    "CREATE TABLE IF NOT EXISTS credentials"
    " (id bytea PRIMARY KEY, public_key bytea NOT NULL, sign_count bigint NOT NULL)",
)


class Refused(Exception):
    pass


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _SQLite:
    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    def lookup(self, credential_id: bytes) -> tuple[bytes, int] | None:
        row = (
            self._conn()
            .execute(
                "SELECT public_key, sign_count FROM credentials WHERE id = ?", (credential_id,)
            )
            .fetchone()
        )
        return None if row is None else (bytes(row[0]), int(row[1]))

    def commit(self, challenge: bytes, credential_id: bytes, old: int, new: int) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            burnt = conn.execute(
                "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0", (challenge,)
            ).rowcount
            raised = conn.execute(
                "UPDATE credentials SET sign_count = ? WHERE id = ? AND sign_count = ?",
                (new, credential_id, old),
            ).rowcount
            if burnt != 1 or raised != 1:
                raise Refused("challenge used or counter moved")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class _Postgres:
    def __init__(self, url: str) -> None:
        from psycopg_pool import ConnectionPool

        self._pool: Any = ConnectionPool(url, min_size=1, max_size=10, open=True)

    @staticmethod
    def _check(conn: Any) -> None:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if row[0] != "on":
            raise RuntimeError("synchronous_commit is not on")

    def lookup(self, credential_id: bytes) -> tuple[bytes, int] | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT public_key, sign_count FROM credentials WHERE id = %s", (credential_id,)
            ).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def commit(self, challenge: bytes, credential_id: bytes, old: int, new: int) -> None:
        with self._pool.connection() as conn, conn.transaction():
            burnt = conn.execute(
                "UPDATE challenges SET used = true WHERE value = %s AND NOT used", (challenge,)
            ).rowcount
            raised = conn.execute(
                "UPDATE credentials SET sign_count = %s WHERE id = %s AND sign_count = %s",
                (new, credential_id, old),
            ).rowcount
            if burnt != 1 or raised != 1:
                raise Refused("challenge used or counter moved")


def open_db(url: str) -> _SQLite | _Postgres:
    if url.startswith("postgresql://"):
        return _Postgres(url)
    return _SQLite(url.removeprefix("sqlite:///"))


def schema(url: str) -> tuple[str, ...]:
    return POSTGRES_SCHEMA if url.startswith("postgresql://") else SQLITE_SCHEMA


def create_ref_app(db: str) -> Starlette:
    store = open_db(db)
    if isinstance(store, _Postgres):
        with store._pool.connection() as conn:
            store._check(conn)

    def run(body: dict[str, Any]) -> int:
        challenge = _b64d(body["challenge"])
        credential = body["credential"]
        credential_id = _b64d(credential["rawId"])
        found = store.lookup(credential_id)
        if found is None:
            raise Refused("unknown credential")
        public_key, old = found
        result = webauthn.verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=public_key,
            credential_current_sign_count=old,
            require_user_verification=True,
        )
        store.commit(challenge, credential_id, old, result.new_sign_count)
        return int(result.new_sign_count)

    return ref_http_app(run)


def ref_http_app(run: Callable[[dict[str, Any]], int]) -> Starlette:
    """The reference's HTTP part around its blocking ``run(body) -> new sign count``
    (``benchmarks/http_layer.py`` prices this layer alone)."""

    async def verify(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            count = await run_in_threadpool(run, body)
        except Exception as exc:  # the thinnest RP: any failure is a refusal
            return JSONResponse({"ok": False, "reason": type(exc).__name__}, status_code=403)
        return JSONResponse({"ok": True, "sign_count": count})

    return Starlette(routes=[Route("/verify", verify, methods=["POST"])])
