"""The HTTP layer's own rules: reading JSON bodies within limits, the answer shape, the admin
token check and how a refusal maps to a status code. Nothing here knows an endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from verifier.errors import Reason, VerifierError
from verifier.views import b64url_text

__all__ = [
    "DEFAULT_MAX_BODY",
    "RATE_LIMITED_PATHS",
    "Limits",
    "LimitsMiddleware",
    "Problem",
    "TokenBuckets",
    "as_problem",
    "b64url_field",
    "bearer_ok",
    "endpoint",
    "fields",
    "http_error",
    "json_response",
    "malformed",
    "object_field",
    "problem_response",
    "read_json",
    "server_error",
    "text_field",
    "token_digest",
]

#: Registration JSON is ~1 KiB; 64 KiB leaves room and keeps hostile bodies cheap.
DEFAULT_MAX_BODY = 64 * 1024
_MAX_TEXT = 256

_log = logging.getLogger("verifier.server")

_HEADERS = {
    # Challenges and decisions are single-use answers: no cache may keep or replay them.
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class Problem(Exception):
    """A request-level refusal of the HTTP layer (the verifier's own are VerifierError)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def malformed(message: str) -> NoReturn:
    raise Problem(400, Reason.MALFORMED.value, message)


# -- answers ------------------------------------------------------------------------------


#: Built once: json.dumps with non-default options makes a new encoder per call. The same
#: bytes as Starlette's JSONResponse (compact, UTF-8, NaN refused).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_RAW_HEADERS = (
    (b"content-type", b"application/json"),
    *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _HEADERS.items()),
)


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    data = _ENCODER.encode(body if type(body) is dict else dict(body)).encode("utf-8")
    response = Response(data, status_code=status, headers=headers)
    # The constant headers appended ready-encoded rather than merged and encoded per answer.
    response.raw_headers.extend(_RAW_HEADERS)
    return response


def problem_response(
    status: int,
    reason: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="verifier"'}
    return json_response(
        status, {"ok": False, "reason": reason, "message": message, **extra}, headers
    )


def _status_for(reason: Reason) -> int:
    if reason is Reason.MALFORMED:
        return 400
    if reason is Reason.CREDENTIAL_EXISTS:
        return 409
    if reason is Reason.STORAGE:
        return 503
    return 403


def as_problem(exc: Problem | VerifierError) -> Problem:
    """The one mapping of a refusal to a status and the text the client may see."""
    if isinstance(exc, Problem):
        return exc
    status = _status_for(exc.reason)
    if status == 503:
        # sqlite's text may name files and paths: keep it in the audit trail, not the answer.
        message = "verifier storage is unavailable; try again later"
    else:
        message = str(exc).removeprefix(f"{exc.reason.value}: ")
    return Problem(status, exc.reason.value, message)


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(func: Handler) -> Handler:
    """Every refusal becomes the JSON problem shape; nothing else escapes with details."""

    async def wrapper(request: Request) -> Response:
        try:
            return await func(request)
        except (Problem, VerifierError) as exc:
            problem = as_problem(exc)
            return problem_response(problem.status, problem.reason, problem.message)
        except Exception as exc:
            # Answered here rather than by Starlette's error middleware, which re-raises so
            # the server logs a full traceback whose text may quote request data.
            _log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
            return problem_response(500, "internal_error", "internal error")

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = exc.headers if isinstance(exc, HTTPException) else None  # 405 keeps Allow
    reason = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return problem_response(status, reason, reason.replace("_", " "), headers)


async def server_error(request: Request, exc: Exception) -> Response:
    # Type and path only: exception text may quote request data.
    _log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
    return problem_response(500, "internal_error", "internal error")


# -- reading requests ---------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may pick different duplicates; refuse rather than guess. dict() in C and a
    # length compare, not a Python loop: this runs for every object of every request.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request, max_body: int) -> dict[str, Any]:
    """The body as a JSON object: ``application/json`` (UTF-8) only, at most ``max_body``
    bytes whether or not Content-Length is sent, no duplicate keys, no NaN/Infinity."""
    content_type = declared = None
    # One pass over the raw head (ASGI names are lower case) instead of a Headers object
    # and two lookups; the first of a repeated header counts, as with Headers.get.
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
    media, _, params = (content_type or "").partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
        raise Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            malformed("Content-Length is not a number")
        if int(declared) > max_body:
            raise Problem(413, "payload_too_large", f"request body over {max_body} bytes")
    # Straight from receive (not Request.stream()'s async generator): a body that came in
    # one message, the usual case, is used as it is. Counted as it arrives, so a chunked
    # body without Content-Length is bounded too.
    receive = request.receive
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            malformed("client went away mid-request")
        if kind != "http.request":
            continue
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > max_body:
            raise Problem(413, "payload_too_large", f"request body over {max_body} bytes")
        if not message.get("more_body", False):
            body = b"".join((*chunks, chunk)) if chunks else chunk
            break
        chunks.append(chunk)
    try:
        obj = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        malformed("request body is not valid JSON")
    if not isinstance(obj, dict):
        malformed("request body must be a JSON object")
    return obj


def fields(
    obj: Mapping[str, Any], required: frozenset[str], optional: frozenset[str] = frozenset()
) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        malformed(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(obj.keys() - required - optional)
    if unknown:
        malformed(f"unknown field(s): {', '.join(unknown)}")


def text_field(obj: Mapping[str, Any], name: str, limit: int = _MAX_TEXT) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        malformed(f"{name} must be a string of 1..{limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        malformed(f"{name} is not valid Unicode")
    return value


def b64url_field(obj: Mapping[str, Any], name: str) -> bytes:
    return b64url_text(obj.get(name), name)  # VerifierError(MALFORMED) answers 400


def object_field(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    if not isinstance(value, dict):
        malformed(f"{name} must be a JSON object")
    return value


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()


def bearer_ok(request: Request, expected: bytes | None) -> bool:
    """Whether the request carries the admin bearer token whose digest is ``expected``."""
    if expected is None:
        return False
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    # Compare digests: constant time, and the token's length does not leak either.
    return hmac.compare_digest(token_digest(token), expected)


# -- resource limits ----------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one client may cost the service. Every field has a safe default; each limit is
    proved against a real uvicorn on 127.0.0.1 in ``tests/verifier/test_server_limits.py``.

    Connection level (uvicorn, see :mod:`verifier.server.run`): ``header_timeout`` seconds
    for a request's head from the connection's first byte (or the previous response; a
    silent or slowly trickling socket is closed), ``keep_alive_timeout`` for an idle
    keep-alive connection, ``max_header_bytes`` for the request head, ``limit_concurrency``
    open connections or running requests before new requests get 503.

    Request level (:class:`LimitsMiddleware`): ``body_timeout`` seconds to receive a whole
    body once the head is in (408 and the connection closed); ``rate`` requests per second
    with bursts of ``burst`` per client address on ``/challenge`` and ``/verify`` (429 with
    ``Retry-After``), remembering at most ``max_clients`` addresses.

    Service level (routes): ``max_open_challenges`` unused, unexpired challenges per user
    (429); audit events older than ``audit_retention`` seconds are deleted every
    ``purge_interval`` seconds (``None``: keep them forever).
    """

    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 16 * 1024
    limit_concurrency: int = 200
    rate: float = 5.0
    burst: int = 20
    max_clients: int = 65_536
    max_open_challenges: int = 10
    audit_retention: float | None = 90 * 86_400.0
    purge_interval: float = 60.0

    def __post_init__(self) -> None:
        for name, high in (
            ("header_timeout", 3600),
            ("body_timeout", 3600),
            ("keep_alive_timeout", 3600),
            ("rate", 1_000_000),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise VerifierError(Reason.MALFORMED, f"{name} must be a number")
            if not 0 < value <= high:
                raise VerifierError(Reason.MALFORMED, f"{name} must be in (0, {high}]")
        for name, low, high in (
            ("max_header_bytes", 1024, 1024 * 1024),
            ("limit_concurrency", 1, 1_000_000),
            ("burst", 1, 1_000_000),
            ("max_clients", 1, 10_000_000),
            ("max_open_challenges", 1, 1_000_000),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise VerifierError(Reason.MALFORMED, f"{name} must be an int in [{low}, {high}]")
        retention = self.audit_retention
        if retention is not None and (
            isinstance(retention, bool)
            or not isinstance(retention, int | float)
            or not math.isfinite(retention)
            or retention <= 0
        ):
            raise VerifierError(Reason.MALFORMED, "audit_retention must be > 0 seconds or None")
        interval = self.purge_interval
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise VerifierError(Reason.MALFORMED, "purge_interval must be a number")
        if not 0 < interval <= 86_400:
            raise VerifierError(Reason.MALFORMED, "purge_interval must be in (0, 86400]")


class TokenBuckets:
    """One token bucket per client key: ``rate`` tokens a second up to ``burst``.

    Time comes from the caller (the app's clock), so tests are exact. The table keeps the
    ``max_clients`` most recently seen keys: a flood of fresh addresses evicts the oldest
    buckets (those clients start again with a full bucket) instead of growing memory."""

    def __init__(self, rate: float, burst: int, max_clients: int) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """Spend one token of ``key``'s bucket: 0.0 if there was one, else the seconds until
        there will be (nothing spent)."""
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


#: The endpoints anyone may call without a credential, each of which costs a database write.
RATE_LIMITED_PATHS = frozenset({"/challenge", "/verify", "/pay/verify"})

_CLOSE = [(b"connection", b"close")]


async def _send_problem(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    status: int,
    reason: str,
    message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"ok": False, "reason": reason, "message": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in _HEADERS.items()),
        *_CLOSE,  # the client misbehaved or must back off: do not keep its connection
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """The request-level limits as one ASGI middleware (uvicorn has no body timeout).

    * Per-client rate limit on :data:`RATE_LIMITED_PATHS`, checked before a byte of the
      body is read: 429 with ``Retry-After``.
    * Body timeout: from the moment the head is in, the whole body must arrive within
      ``body_timeout`` seconds (not per chunk, so trickling does not help). On expiry the
      app sees a disconnect and the client gets 408 and a closed connection.
    """

    def __init__(self, app: Any, limits: Limits, clock: Callable[[], float]) -> None:
        self.app = app
        self.limits = limits
        self.clock = clock
        self.buckets = TokenBuckets(limits.rate, limits.burst, limits.max_clients)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") in RATE_LIMITED_PATHS:
            client = scope.get("client")
            key = str(client[0]) if client else "unknown"
            wait = self.buckets.take(key, self.clock())
            if wait > 0:
                await _send_problem(
                    send,
                    429,
                    "rate_limited",
                    "too many requests from this address; slow down",
                    [(b"retry-after", str(max(1, math.ceil(wait))).encode())],
                )
                return
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout
        guard = _BodyDeadline(receive, send, deadline)
        await self.app(scope, guard.receive, guard.send)


class _BodyDeadline:
    """One request's receive and send under its body deadline (an object with slots, not a
    state dict and two closures per request)."""

    __slots__ = ("_answered", "_body_done", "_deadline", "_receive", "_send", "_timed_out")

    def __init__(self, receive: Any, send: Any, deadline: float) -> None:
        self._receive = receive
        self._send = send
        self._deadline = deadline
        self._body_done = False
        self._timed_out = False
        self._answered = False

    async def receive(self) -> dict[str, Any]:
        if self._body_done:
            message: dict[str, Any] = await self._receive()
            return message
        try:
            # asyncio.timeout, not wait_for: the same deadline without a task per
            # receive (a measurable part of each request's CPU under load).
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self._timed_out = True
            return {"type": "http.disconnect"}
        if message.get("type") != "http.request" or not message.get("more_body", False):
            self._body_done = True
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if not self._timed_out:
            await self._send(message)
            return
        if not self._answered and message.get("type") == "http.response.start":
            self._answered = True
            await _send_problem(
                self._send, 408, "request_timeout", "the request body did not arrive in time"
            )
