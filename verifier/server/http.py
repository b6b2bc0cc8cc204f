"""The HTTP layer's own rules: reading JSON bodies within limits, the answer shape, the admin
token check and how a refusal maps to a status code. Nothing here knows an endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from verifier.errors import Reason, VerifierError
from verifier.views import b64url_text

__all__ = [
    "DEFAULT_MAX_BODY",
    "Problem",
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


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(dict(body), status_code=status, headers={**_HEADERS, **(headers or {})})


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
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            # Two parsers may pick different duplicates; refuse rather than guess.
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request, max_body: int) -> dict[str, Any]:
    """The body as a JSON object: ``application/json`` (UTF-8) only, at most ``max_body``
    bytes whether or not Content-Length is sent, no duplicate keys, no NaN/Infinity."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = params.strip().lower().replace(" ", "")
    if media.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
        raise Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            malformed("Content-Length is not a number")
        if int(declared) > max_body:
            raise Problem(413, "payload_too_large", f"request body over {max_body} bytes")
    chunks: list[bytes] = []
    total = 0
    # Counted while streaming, so a chunked body without Content-Length is bounded too.
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise Problem(413, "payload_too_large", f"request body over {max_body} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        malformed("client went away mid-request")
    try:
        obj = json.loads(
            b"".join(chunks).decode("utf-8"),
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
