"""A reference relying-party HTTP service over the verifier (the ``server`` extra).

Small on purpose, so relying parties can read it in one sitting and copy what they need:
JSON in, JSON out, one SQLite database, one revocation-list signing key. ::

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
registered (or user already enrolled, with open registration); 413 body over the limit;
415 not ``application/json``; 503 storage unavailable. Refusals look like
``{"ok": false, "reason": "<machine reason>", "message": "<for people>"}``.

Concurrency: one :class:`~verifier.store.SQLiteStore` per app, shared by all requests.
Endpoints are ``async`` and hand each verifier call to Starlette's thread pool, because the
store fsyncs (``synchronous=FULL``) and would otherwise stall the event loop for every other
client. Sharing one connection across those threads is safe: ``SQLiteStore`` opens it with
``check_same_thread=False`` and serialises every use with its own lock, and the two writes
that race (redeeming a challenge, raising a counter) are single conditional UPDATEs, so they
stay correct across processes too. A connection per request would redo the WAL and schema
checks on every call and buy nothing.

Logging: request bodies are never logged (they carry no biometrics by design, but ids and
tokens stay out of logs too); unexpected faults are logged by exception type and path only.
No CORS headers are sent: a browser front end belongs on the RP's own origin.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import nacl.signing
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devicebio.protocol import LivenessClaim, Method
from verifier.assertion import VerifiedAssertion, verify_assertion
from verifier.challenges import DEFAULT_TTL, Purpose, issue_challenge
from verifier.errors import Reason, VerifierError
from verifier.policy import Assurance, Policy
from verifier.registration import VerifiedRegistration, verify_registration
from verifier.revocation import (
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    install_revocation_list,
    parse_revocation_list,
    revocation_list_to_json,
    sign_revocation_list,
)
from verifier.store import SQLiteStore

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_BODY",
    "BackgroundServer",
    "create_app",
    "serve",
    "serve_in_thread",
]

DEFAULT_HOST = "127.0.0.1"
#: Registration JSON is ~1 KiB; 64 KiB leaves room and keeps hostile bodies cheap.
DEFAULT_MAX_BODY = 64 * 1024
_MAX_USER = 256
_MAX_TEXT = 256
_MIN_ADMIN_TOKEN = 16
_PURGE_EVERY = 60.0
_PUBLISH_ATTEMPTS = 10
_DEFAULT_VALIDITY_DAYS = 30.0
_DEFAULT_ISSUER = "verifier"

_log = logging.getLogger("verifier.server")

_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# -- request-level refusals (the HTTP layer's own; the verifier's are VerifierError) -------


class _Problem(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _malformed(message: str) -> NoReturn:
    raise _Problem(400, Reason.MALFORMED.value, message)


_HEADERS = {
    # Challenges and decisions are single-use answers: no cache may keep or replay them.
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _json(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(dict(body), status_code=status, headers={**_HEADERS, **(headers or {})})


def _problem_response(
    status: int,
    reason: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="verifier"'}
    return _json(status, {"ok": False, "reason": reason, "message": message, **extra}, headers)


def _status_for(reason: Reason) -> int:
    if reason is Reason.MALFORMED:
        return 400
    if reason is Reason.CREDENTIAL_EXISTS:
        return 409
    if reason is Reason.STORAGE:
        return 503
    return 403


def _verifier_problem(exc: VerifierError) -> _Problem:
    status = _status_for(exc.reason)
    if status == 503:
        # sqlite's text may name files and paths: keep it in the audit trail, not the answer.
        message = "verifier storage is unavailable; try again later"
    else:
        message = str(exc).removeprefix(f"{exc.reason.value}: ")
    return _Problem(status, exc.reason.value, message)


# -- reading requests ---------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            # Two parsers may pick different duplicates; refuse rather than guess.
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


async def _read_json(request: Request, max_body: int) -> dict[str, Any]:
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
        raise _Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            _malformed("Content-Length is not a number")
        if int(declared) > max_body:
            raise _Problem(413, "payload_too_large", f"request body over {max_body} bytes")
    chunks: list[bytes] = []
    total = 0
    # Counted while streaming, so a chunked body without Content-Length is bounded too.
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise _Problem(413, "payload_too_large", f"request body over {max_body} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        _malformed("client went away mid-request")
    try:
        obj = json.loads(
            b"".join(chunks).decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        _malformed("request body is not valid JSON")
    if not isinstance(obj, dict):
        _malformed("request body must be a JSON object")
    return obj


def _fields(
    obj: Mapping[str, Any], required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        _malformed(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        _malformed(f"unknown field(s): {', '.join(unknown)}")


def _text(obj: Mapping[str, Any], name: str, limit: int = _MAX_TEXT) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        _malformed(f"{name} must be a string of 1..{limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _malformed(f"{name} is not valid Unicode")
    return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_field(obj: Mapping[str, Any], name: str) -> bytes:
    text = obj.get(name)
    if not isinstance(text, str) or not 1 <= len(text) <= 2048:
        _malformed(f"{name} must be base64url text")
    cleaned = text.rstrip("=")
    if not cleaned or not set(cleaned) <= _B64URL_CHARS or len(cleaned) % 4 == 1:
        _malformed(f"{name} must be base64url text")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        _malformed(f"{name} must be base64url text")


def _object_field(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        _malformed(f"{name} must be a JSON object")
    return value


def _bearer_ok(request: Request, expected: bytes | None) -> bool:
    if expected is None:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    # Compare digests: constant time, and the token's length does not leak either.
    presented = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(presented, expected)


# -- what the RP decided, in words --------------------------------------------------------


def _how(method: Method, liveness: LivenessClaim) -> str:
    if method is Method.FACE:
        return f"face with liveness ({liveness.kind})" if liveness.passed else "face, no liveness"
    if method is Method.PIN:
        return "PIN only"
    if method is Method.SECURITY_KEY:
        return "security key"
    return "recovery code"


def _policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "accepted_methods": sorted(m.value for m in policy.accepted_methods),
        "require_user_verification": policy.require_user_verification,
        "require_liveness": policy.require_liveness,
        "assurance": {
            "face_with_liveness": policy.face_with_liveness.value,
            "face_without_liveness": policy.face_without_liveness.value,
            "pin": policy.pin.value,
            "security_key": policy.security_key.value,
            "recovery": policy.recovery.value,
        },
    }


def _strong_options(policy: Policy) -> list[str]:
    options: list[tuple[Method, Assurance, str]] = [
        (Method.FACE, policy.face_with_liveness, "face with liveness"),
        (Method.SECURITY_KEY, policy.security_key, "a security key"),
        (Method.PIN, policy.pin, "PIN"),
    ]
    if not policy.require_liveness:
        options.insert(1, (Method.FACE, policy.face_without_liveness, "face"))
    return [
        name
        for method, assurance, name in options
        if assurance is Assurance.STRONG and method in policy.accepted_methods
    ]


def _accepted_decision(result: VerifiedAssertion, policy: Policy) -> str:
    how = _how(result.method, result.liveness)
    assurance = result.assurance
    if assurance is Assurance.STRONG:
        return f"accepted: {how} = strong"
    if assurance is Assurance.RECOVERY:
        return (
            f"accepted for recovery only: {how} = recovery; re-enrol the user's face and "
            "credential before anything else"
        )
    if assurance is Assurance.NONE:
        return "accepted with no assurance: user present but not verified; allow no sign-in"
    options = _strong_options(policy)
    step_up = (
        f"step up ({' or '.join(options)}) before payments or account changes"
        if options
        else "no method earns strong assurance under this policy"
    )
    return f"accepted with reduced assurance: {how} = {assurance.value}; {step_up}"


_EXPLAIN = {
    Reason.REVOKED: "the credential, its device or its model is on the revocation list",
    Reason.CHALLENGE_REUSED: "the challenge was already used (replay)",
    Reason.CHALLENGE_EXPIRED: "the challenge expired; ask for a new one",
    Reason.CHALLENGE_UNKNOWN: "this verifier never issued that challenge",
    Reason.COUNTER_REGRESSION: "the signature counter went backwards (possible cloned key)",
    Reason.POLICY_METHOD_REFUSED: "this RP does not accept that method",
    Reason.POLICY_LIVENESS_REQUIRED: "face without passed liveness; liveness is required",
    Reason.CREDENTIAL_UNKNOWN: "no such registered credential",
    Reason.BAD_SIGNATURE: "the signature does not verify",
    Reason.REVOCATION_LIST_STALE: "the revocation list in force is out of date (fail closed)",
    Reason.REVOCATION_LIST_MISSING: "no revocation list is installed (fail closed)",
    Reason.STORAGE: "the verifier cannot reach its storage (fail closed)",
}


def _refused_decision(reason: str, message: str) -> str:
    try:
        why = _EXPLAIN.get(Reason(reason), message)
    except ValueError:
        why = message
    return f"refused: {reason}" + (f" ({why})" if why else "")


def _liveness_json(liveness: LivenessClaim) -> dict[str, Any]:
    return {
        "kind": liveness.kind,
        "passed": liveness.passed,
        "frames": liveness.frames,
        "sequence_hash": None if liveness.sequence_hash is None else liveness.sequence_hash.hex(),
    }


# -- the revocation list this RP signs ----------------------------------------------------


def _load_key(path: str | Path) -> nacl.signing.SigningKey:
    # One reader of the key-file format (the CLI's), so `verifier keygen` files just work.
    from verifier import cli

    try:
        return cli._load_signing_key(str(path))
    except cli._UsageError as exc:
        raise VerifierError(Reason.MALFORMED, str(exc)) from None
    except OSError as exc:
        raise VerifierError(
            Reason.STORAGE, f"cannot read the revocation key file: {exc.strerror}"
        ) from None


class _Revocation:
    """Signs, installs and renews this RP's list. One lock per app keeps its own requests
    from racing each other; racing processes (e.g. the CLI) are handled by retrying on
    ``REVOCATION_LIST_ROLLBACK``, as ``verifier revoke`` does."""

    def __init__(
        self,
        store: SQLiteStore,
        key: nacl.signing.SigningKey,
        *,
        issuer: str,
        validity: float,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.key = key
        self.issuer = issuer
        self.validity = validity
        self.clock = clock
        self.lock = threading.Lock()
        self._parsed: tuple[RevocationList, bytes] | None = None

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.key.verify_key

    def current(self) -> tuple[RevocationList, bytes] | None:
        state = self.store.get_revocation_state()
        if state is None:
            return None
        data = state[1]
        cached = self._parsed
        if cached is not None and cached[1] == data:
            return cached
        # Verified before it is remembered; the cache keys on the exact bytes.
        parsed = (parse_revocation_list(data, self.key.verify_key), data)
        self._parsed = parsed
        return parsed

    def _fresh(self) -> bool:
        found = self.current()
        if found is None:
            return False
        rl = found[0]
        return rl.next_update - self.clock() > (rl.next_update - rl.this_update) / 2

    def ensure_fresh(self) -> None:
        """Publish the first (empty) list, or renew the one in force once half its validity
        has gone, so verification never fails closed merely because nobody re-signed."""
        if self._fresh():  # the common case, without taking the lock
            return
        with self.lock:
            if not self._fresh():
                self._publish(None)

    def revoke(self, entry: RevocationEntry) -> tuple[RevocationList, bytes, bool]:
        with self.lock:
            found = self.current()
            if found is not None:
                for old in found[0].entries:
                    if old.kind is entry.kind and old.value == entry.value:
                        # Idempotent: an admin retrying after a timeout gets the same list.
                        return found[0], found[1], False
            rl, data = self._publish(entry)
            self.store.audit(
                "revoked", kind=entry.kind.value, reason=entry.reason.value, serial=rl.serial
            )
            return rl, data, True

    def _publish(self, entry: RevocationEntry | None) -> tuple[RevocationList, bytes]:
        for attempt in range(_PUBLISH_ATTEMPTS):
            now = int(self.clock())
            state = self.store.get_revocation_state()
            # Carry over only entries we can verify as ours: never launder a tampered list.
            previous = None if state is None else parse_revocation_list(state[1], self.verify_key)
            entries = previous.entries if previous is not None else ()
            if entry is not None and not any(
                e.kind is entry.kind and e.value == entry.value for e in entries
            ):
                entries = (*entries, entry)
            rl = RevocationList(
                issuer=previous.issuer if previous is not None else self.issuer,
                serial=1 if state is None else state[0] + 1,
                this_update=now,
                next_update=now + max(1, int(self.validity)),
                entries=entries,
            )
            data = sign_revocation_list(rl, self.key)
            try:
                install_revocation_list(self.store, data, self.verify_key, now=now)
                return rl, data
            except VerifierError as exc:
                if exc.reason is not Reason.REVOCATION_LIST_ROLLBACK:
                    raise
                if attempt == _PUBLISH_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover


# -- the application ----------------------------------------------------------------------


Handler = Callable[[Request], Awaitable[Response]]


def _endpoint(func: Handler) -> Handler:
    """Every refusal becomes the JSON problem shape; nothing else escapes with details."""

    async def wrapper(request: Request) -> Response:
        try:
            return await func(request)
        except (_Problem, VerifierError) as exc:
            problem = exc if isinstance(exc, _Problem) else _verifier_problem(exc)
            return _problem_response(problem.status, problem.reason, problem.message)
        except Exception as exc:
            # Answered here rather than by Starlette's error middleware, which re-raises so
            # the server logs a full traceback whose text may quote request data.
            _log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
            return _problem_response(500, "internal_error", "internal error")

    wrapper.__name__ = func.__name__
    return wrapper


def _entry_from(obj: Mapping[str, Any], now: int) -> RevocationEntry:
    targets = [k for k in ("credential_id", "device_id", "model_id", "sdk_version") if k in obj]
    if len(targets) != 1:
        _malformed("name exactly one of credential_id, device_id, model_id, sdk_version")
    reason_text = _text(obj, "reason").strip().lower().replace("-", "_")
    try:
        reason = RevocationReason(reason_text)
    except ValueError:
        _malformed("reason must be one of " + ", ".join(r.value for r in RevocationReason))
    target = targets[0]
    value: bytes | str
    if target == "credential_id":
        kind, value = EntryKind.CREDENTIAL_ID, _b64url_field(obj, target)
    elif target == "device_id":
        text = _text(obj, target, 2 * 1023)
        try:
            value = bytes.fromhex(text)
        except ValueError:
            _malformed("device_id must be hex")
        kind = EntryKind.DEVICE_KEY
    elif target == "model_id":
        kind, value = EntryKind.MODEL_ID, _text(obj, target)
    else:
        kind, value = EntryKind.SDK_VERSION, _text(obj, target)
    if isinstance(value, bytes) and not 1 <= len(value) <= 1023:
        _malformed(f"{target} must be 1..1023 bytes")
    return RevocationEntry(kind=kind, value=value, reason=reason, revoked_at=now)


def create_app(
    *,
    db: str | Path,
    rp_id: str,
    origin: str,
    revocation_key_file: str | Path | None,
    policy: Policy | None = None,
    admin_token: str | None = None,
    open_registration: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    challenge_ttl: float = DEFAULT_TTL,
    revocation_validity_days: float = _DEFAULT_VALIDITY_DAYS,
    issuer: str = _DEFAULT_ISSUER,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the relying-party app on the SQLite database ``db``.

    ``revocation_key_file`` is a signing key from ``verifier keygen``: the app publishes an
    empty list signed with it if none is in force, renews the list at half its validity,
    and then *requires* a fresh list for every assertion (fail closed). ``None`` turns
    revocation off (``/revoke`` and ``/revocation`` answer 404).

    ``admin_token`` (at least 16 characters) guards ``/revoke``, and ``/challenge`` with
    purpose ``register`` unless ``open_registration``: enrolling a credential for a user is
    an act the RP authorises, or anyone could add their own device to someone else's
    account. With ``open_registration=True`` anyone may register a user that has no
    credential yet (sign-up); adding a device to an existing user still needs the token.
    Without ``admin_token`` those requests are all refused (401).

    Raises ``VerifierError``: ``MALFORMED`` for bad arguments or key file, ``STORAGE`` when
    the database or key cannot be opened, or the list in force is not this key's.
    """
    if policy is None:
        policy = Policy()
    if not isinstance(policy, Policy):
        raise VerifierError(Reason.MALFORMED, "policy must be a Policy")
    for name, value in (("rp_id", rp_id), ("origin", origin)):
        if not isinstance(value, str) or not value:
            raise VerifierError(Reason.MALFORMED, f"{name} must be a non-empty str")
    if admin_token is not None and (
        not isinstance(admin_token, str) or len(admin_token.strip()) < _MIN_ADMIN_TOKEN
    ):
        raise VerifierError(
            Reason.MALFORMED, f"admin_token must be at least {_MIN_ADMIN_TOKEN} characters"
        )
    if type(max_body) is not int or not 1024 <= max_body <= 16 * 1024 * 1024:
        raise VerifierError(Reason.MALFORMED, "max_body must be 1 KiB..16 MiB")
    if not isinstance(challenge_ttl, int | float) or not 0 < challenge_ttl <= 86_400:
        raise VerifierError(Reason.MALFORMED, "challenge_ttl must be in (0, 86400] seconds")
    if (
        not isinstance(revocation_validity_days, int | float)
        or not math.isfinite(revocation_validity_days)
        or not 0 < revocation_validity_days <= 3650
    ):
        raise VerifierError(Reason.MALFORMED, "revocation_validity_days must be in (0, 3650]")
    token_digest = (
        None
        if admin_token is None
        else hashlib.sha256(admin_token.strip().encode("utf-8", "surrogatepass")).digest()
    )
    key = None if revocation_key_file is None else _load_key(revocation_key_file)

    store = SQLiteStore(db)
    revocation: _Revocation | None = None
    if key is not None:
        revocation = _Revocation(
            store,
            key,
            issuer=issuer,
            validity=revocation_validity_days * 86_400,
            clock=clock,
        )
        try:
            # At start: a list this key did not sign, or no list, should show now, not on
            # the first sign-in.
            revocation.ensure_fresh()
        except VerifierError:
            store.close()
            raise
    last_purge = [0.0]

    def revocation_key() -> nacl.signing.VerifyKey | None:
        """The issuer key to enforce the list with, after renewing the list if it is due.
        Renewal is best effort: if it fails, the check it feeds fails closed."""
        if revocation is None:
            return None
        with contextlib.suppress(VerifierError):
            revocation.ensure_fresh()
        return revocation.verify_key

    def _blocking(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return run_in_threadpool(func, *args, **kwargs)

    # -- handlers ---------------------------------------------------------------------

    @_endpoint
    async def healthz(request: Request) -> Response:
        def check() -> int | None:
            state = store.get_revocation_state()
            return None if state is None else state[0]

        serial = await _blocking(check)
        return _json(
            200,
            {
                "ok": True,
                "rp_id": rp_id,
                "revocation": "enforced" if revocation is not None else "off",
                "revocation_serial": serial,
            },
        )

    @_endpoint
    async def challenge(request: Request) -> Response:
        body = await _read_json(request, max_body)
        _fields(body, frozenset({"user", "purpose"}))
        user = _text(body, "user", _MAX_USER)
        purpose_text = body.get("purpose")
        if purpose_text not in (Purpose.REGISTER.value, Purpose.AUTHENTICATE.value):
            _malformed("purpose must be 'register' or 'authenticate'")
        purpose = Purpose(purpose_text)
        admin = _bearer_ok(request, token_digest)
        if purpose is Purpose.REGISTER and not admin and not open_registration:
            raise _Problem(401, "unauthorized", "registering a credential needs the admin token")

        def issue() -> Any:
            now = clock()
            if now - last_purge[0] > _PURGE_EVERY:
                # Anyone may ask for challenges: drop the dead ones so the table stays small.
                last_purge[0] = now
                store.purge_expired_challenges(now)
            if purpose is Purpose.REGISTER and not admin and store.credentials_for_user(user):
                raise _Problem(
                    409, "user_exists", "this user is enrolled; adding a device needs the token"
                )
            return issue_challenge(store, user=user, purpose=purpose, ttl=challenge_ttl, now=now)

        c = await _blocking(issue)
        return _json(
            200,
            {
                "ok": True,
                "challenge": _b64url(c.value),
                "user": c.user,
                "purpose": c.purpose.value,
                "expires_at": c.expires_at,
                "rp_id": rp_id,
                "origin": origin,
            },
        )

    @_endpoint
    async def register(request: Request) -> Response:
        body = await _read_json(request, max_body)
        _fields(body, frozenset({"user", "challenge", "credential"}))
        user = _text(body, "user", _MAX_USER)
        value = _b64url_field(body, "challenge")
        credential = _object_field(body, "credential")

        def run() -> VerifiedRegistration:
            return verify_registration(
                credential=credential,
                expected_challenge=value,
                expected_origin=origin,
                expected_rp_id=rp_id,
                store=store,
                user=user,
                policy=policy,
                revocation_issuer_key=revocation_key(),
                now=clock(),
            )

        result = await _blocking(run)
        return _json(
            200,
            {
                "ok": True,
                "credential_id": _b64url(result.credential_id),
                "user": result.user,
                "device_id": None if result.device_id is None else result.device_id.hex(),
                "method": result.method.value,
                "assurance": result.assurance.value,
                "liveness": _liveness_json(result.liveness),
                "model": result.model,
                "user_verified": result.user_verified,
            },
        )

    @_endpoint
    async def verify(request: Request) -> Response:
        effective = policy
        try:
            body = await _read_json(request, max_body)
            _fields(body, frozenset({"challenge", "credential"}), frozenset({"require_liveness"}))
            value = _b64url_field(body, "challenge")
            credential = _object_field(body, "credential")
            require_liveness = body.get("require_liveness", False)
            if type(require_liveness) is not bool:
                _malformed("require_liveness must be true or false")
            if require_liveness:
                # The caller may only make the RP's policy stricter, never looser.
                effective = dataclasses.replace(policy, require_liveness=True)

            def run() -> VerifiedAssertion:
                return verify_assertion(
                    credential=credential,
                    expected_challenge=value,
                    expected_origin=origin,
                    expected_rp_id=rp_id,
                    store=store,
                    policy=effective,
                    revocation_issuer_key=revocation_key(),
                    now=clock(),
                )

            result: VerifiedAssertion = await _blocking(run)
        except (_Problem, VerifierError) as exc:
            problem = exc if isinstance(exc, _Problem) else _verifier_problem(exc)
            return _problem_response(
                problem.status,
                problem.reason,
                problem.message,
                decision=_refused_decision(problem.reason, problem.message),
                policy=_policy_json(effective),
            )
        return _json(
            200,
            {
                "ok": True,
                "decision": _accepted_decision(result, effective),
                "user": result.user,
                "credential_id": _b64url(result.credential_id),
                "method": result.method.value,
                "assurance": result.assurance.value,
                "step_up_required": result.assurance is not Assurance.STRONG,
                "re_enrol_required": result.re_enrol_required,
                "liveness": _liveness_json(result.liveness),
                "model": result.model,
                "sdk_version": result.sdk_version,
                "sign_count": result.new_sign_count,
                "user_verified": result.user_verified,
                "revocation_checked": revocation is not None,
                "policy": _policy_json(effective),
            },
        )

    def _list_body(rl: RevocationList, data: bytes, **extra: Any) -> dict[str, Any]:
        assert revocation is not None
        return {
            "ok": True,
            "serial": rl.serial,
            "signed": _b64url(data),
            "issuer_public_key": _b64url(bytes(revocation.verify_key)),
            "list": revocation_list_to_json(rl),
            **extra,
        }

    @_endpoint
    async def revoke(request: Request) -> Response:
        # Authenticate before reading a byte of the body.
        if not _bearer_ok(request, token_digest):
            raise _Problem(401, "unauthorized", "this endpoint needs the admin bearer token")
        if revocation is None:
            raise _Problem(404, "revocation_off", "this verifier has no revocation key")
        body = await _read_json(request, max_body)
        _fields(
            body,
            frozenset({"reason"}),
            frozenset({"credential_id", "device_id", "model_id", "sdk_version"}),
        )
        entry = _entry_from(body, int(clock()))
        rl, data, changed = await _blocking(revocation.revoke, entry)
        return _json(200, _list_body(rl, data, changed=changed))

    @_endpoint
    async def revocation_list(request: Request) -> Response:
        if revocation is None:
            raise _Problem(404, "revocation_off", "this verifier has no revocation key")
        found = await _blocking(revocation.current)
        if found is None:
            raise _Problem(404, Reason.REVOCATION_LIST_MISSING.value, "no list installed yet")
        return _json(200, _list_body(*found))

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = exc.headers if isinstance(exc, HTTPException) else None  # 405 keeps Allow
        reason = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        return _problem_response(status, reason, reason.replace("_", " "), headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Type and path only: exception text may quote request data.
        _log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        return _problem_response(500, "internal_error", "internal error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/challenge", challenge, methods=["POST"]),
            Route("/register", register, methods=["POST"]),
            Route("/verify", verify, methods=["POST"]),
            Route("/revoke", revoke, methods=["POST"]),
            Route("/revocation", revocation_list, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.policy = policy
    return app


# -- running it ---------------------------------------------------------------------------


def _listening_socket(host: str, port: int, allow_non_loopback: bool) -> socket.socket:
    if host == "localhost":
        host = DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise VerifierError(Reason.MALFORMED, "host must be an IP address") from None
    if not address.is_loopback and not allow_non_loopback:
        # No TLS here: exposing it beyond this machine belongs behind a TLS reverse proxy.
        raise VerifierError(
            Reason.MALFORMED, f"{host} is not a loopback address (allow_non_loopback=True)"
        )
    if type(port) is not int or not 0 <= port <= 65535:
        raise VerifierError(Reason.MALFORMED, "port must be 0..65535")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(address), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise VerifierError(Reason.STORAGE, f"cannot listen on {host}:{port}: {exc}") from None
    return sock


def _url(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", int(port)


def _uvicorn_server(app: Starlette, access_log: bool) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=access_log,
        log_config=None,  # leave the host program's logging configuration alone
        log_level="info" if access_log else "warning",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve(
    app: Starlette,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    allow_non_loopback: bool = False,
    access_log: bool = False,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Run ``app`` with uvicorn until SIGINT/SIGTERM (blocking).

    Binds 127.0.0.1 unless ``host`` says otherwise; a non-loopback host is refused unless
    ``allow_non_loopback`` (put TLS in front first). ``port=0`` picks a free port;
    ``on_listening`` receives the URL once the socket listens (e.g. to print it).
    """
    sock = _listening_socket(host, port, allow_non_loopback)
    url, _ = _url(sock)
    if on_listening is not None:
        on_listening(url)
    _uvicorn_server(app, access_log).run(sockets=[sock])


class BackgroundServer:
    """A uvicorn server on a daemon thread (tests, demos). Use as a context manager."""

    def __init__(self, server: Any, thread: threading.Thread, url: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.port = port

    def close(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_in_thread(
    app: Starlette,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    startup_timeout: float = 10.0,
) -> BackgroundServer:
    """Start ``app`` on a background thread (loopback only) and return once it accepts
    connections; raises ``VerifierError(STORAGE)`` if it does not start in time."""
    sock = _listening_socket(host, port, allow_non_loopback=False)
    url, bound_port = _url(sock)
    server = _uvicorn_server(app, access_log=False)

    # uvicorn makes a fresh event loop on this thread and skips signal handlers off the main
    # thread, so the host program keeps its own.
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"verifier-server:{bound_port}",
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(startup_timeout)
            sock.close()
            raise VerifierError(Reason.STORAGE, "the HTTP server did not start")
        time.sleep(0.01)
    return BackgroundServer(server, thread, url, bound_port)
