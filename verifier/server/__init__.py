"""A reference relying-party HTTP service over the verifier (the ``server`` extra).

Small on purpose, so relying parties can read it in one sitting and copy what they need:
JSON in, JSON out, one store (SQLite or PostgreSQL), one revocation-list signing key. ::

    app = create_app(db="verifier.db", rp_id="example.com", origin="https://example.com",
                     revocation_key_file="rl-key.json", admin_token=token)
    serve(app, port=8000)          # 127.0.0.1 only, unless told otherwise

Endpoints (every body is a JSON object; every answer is JSON with ``"ok"``)::

    POST /challenge   {"user", "purpose": "register"|"authenticate"}
                      -> {"challenge": b64url, "expires_at", ...}
                      (register challenges need the admin token unless open_registration)
    POST /register    {"user", "challenge", "credential": RegistrationResponseJSON}
    POST /verify      {"challenge", "credential": AuthenticationResponseJSON,
                       "require_liveness"?: bool}   -> the RP's decision, with its reasons
    POST /revoke      {"credential_id"|"device_id"|"model_id"|"sdk_version", "reason"}
                      admin: Authorization: Bearer <admin_token>
    GET  /revocation  the signed list in force (base64url) and its decoded view; public
    GET  /healthz

Status codes: 200 ok; 400 malformed request; 401 admin token missing or wrong; 403 refused by
the verifier (``reason`` says why); 404/405 no such route or method; 409 credential already
registered (or user already enrolled, with open registration); 408 body not received in
time; 413 body over the limit; 415 not ``application/json``; 429 rate limited (per client
address, ``Retry-After``) or too many unused challenges for the user; 503 storage
unavailable, or the concurrency limit reached. Refusals look like
``{"ok": false, "reason": "<machine reason>", "message": "<for people>"}``.

Concurrency: one store per app (per worker process), shared by all its requests: the store
``db`` names (:func:`verifier.store.open_store`: ``postgresql://...``, ``sqlite:///path`` or a
plain SQLite path). Endpoints are ``async`` and hand each verifier call to Starlette's thread
pool, because the store waits for durable commits and would otherwise stall the event loop
for every other client. ``SQLiteStore`` shares one connection across those threads
(``check_same_thread=False``, serialised by its own lock); ``PostgresStore`` gives each thread
a pooled connection, so concurrent verifications commit concurrently and PostgreSQL flushes
their commits together (group commit). Several processes (``serve_workers``, ``verifier serve
--workers N``, other machines on one PostgreSQL) stay correct together because the two writes
that race, redeeming a challenge and raising a counter, are single conditional statements in
the database, never checks in a process's memory; docs/deployment.md says what SQLite allows.

Limits: :class:`~verifier.server.http.Limits` (``create_app(limits=...)``) bounds what one
client may cost: head and body timeouts, idle keep-alive, head size, concurrency, a token
bucket per client address on ``/challenge`` and ``/verify``, unused challenges per user, and
audit retention. Behind a reverse proxy every client has the proxy's address: rate-limit
there too.

Logging: request bodies are never logged (they carry no biometrics by design, but ids and
tokens stay out of logs too); unexpected faults are logged by exception type and path only.
No CORS headers are sent: a browser front end belongs on the RP's own origin.

Layout: :mod:`.app` (``create_app``: configuration and wiring), :mod:`.routes` (one function
per endpoint), :mod:`.http` (body limits, the answer shape, status mapping), :mod:`.run`
(uvicorn: one process, or ``serve_workers`` for several on one socket). Answers are
:mod:`verifier.views`, the same views the CLI prints with ``--json``; ``/revoke`` and renewals
are :func:`verifier.revocation.issue.publish`, as ``verifier revoke``. The server never
imports the CLI.
"""

from __future__ import annotations

from .app import create_app
from .http import DEFAULT_MAX_BODY
from .run import DEFAULT_HOST, MAX_WORKERS, BackgroundServer, serve, serve_in_thread, serve_workers

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY",
    "MAX_WORKERS",
    "BackgroundServer",
    "create_app",
    "serve",
    "serve_in_thread",
    "serve_workers",
]
