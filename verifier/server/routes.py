"""The endpoints, one function each. Each reads the request, hands the verifier call to the
thread pool, and answers with a view from :mod:`verifier.views`; the app's configuration is
the :class:`Service` on ``request.app.state.service``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import nacl.signing
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devicebio.protocol import (
    Amount,
    Instrument,
    PaymentDetails,
    ProtocolError,
    b64url_encode,
)
from verifier.assertion import VerifiedAssertion, verify_assertion
from verifier.challenges import Challenge, Purpose, issue_challenge
from verifier.errors import Reason, VerifierError
from verifier.payment import PaymentPolicy, VerifiedPayment, verify_payment
from verifier.policy import Policy
from verifier.registration import VerifiedRegistration, verify_registration
from verifier.revocation import RevocationList
from verifier.revocation.issue import ListIssuer, entry_from_text
from verifier.store import Store
from verifier.views import (
    assertion_json,
    challenge_json,
    policy_json,
    receipt_json,
    refused_decision,
    registration_json,
    revocation_list_to_json,
)

from .http import (
    Limits,
    Problem,
    as_problem,
    b64url_field,
    bearer_ok,
    endpoint,
    fields,
    json_response,
    malformed,
    object_field,
    problem_response,
    read_json,
    text_field,
)

__all__ = ["ROUTES", "Service"]

_MAX_USER = 256
#: Verifier calls running at once per process: what Starlette's thread pool allowed (anyio's
#: default limiter), so the store sees the same concurrency.
BLOCKING_THREADS = 40
_REVOKE_TARGETS = ("credential_id", "device_id", "model_id", "sdk_version")


@dataclass
class Service:
    """What the handlers share: the validated configuration and the one store."""

    store: Store
    policy: Policy
    rp_id: str
    origin: str
    revocation: ListIssuer | None
    token_digest: bytes | None
    open_registration: bool
    max_body: int
    challenge_ttl: float
    clock: Callable[[], float] = time.time
    limits: Limits = dataclasses.field(default_factory=Limits)
    last_purge: float | None = None
    payment_policy: PaymentPolicy = dataclasses.field(default_factory=PaymentPolicy)
    executor: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(BLOCKING_THREADS, "verifier-call")
    )
    #: ``policy`` with liveness required, for callers that ask for it: built once, so each
    #: such request does not validate a new Policy (nor miss the views' render cache).
    liveness_policy: Policy = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.liveness_policy = dataclasses.replace(self.policy, require_liveness=True)

    def revocation_key(self) -> nacl.signing.VerifyKey | None:
        """The issuer key to enforce the list with, after renewing the list if it is due.
        Renewal is best effort: if it fails, the check it feeds fails closed."""
        if self.revocation is None:
            return None
        with contextlib.suppress(VerifierError):
            self.revocation.ensure_fresh()
        return self.revocation.verify_key

    def purge_if_due(self, now: float) -> None:
        """Drop dead challenges, and audit events past their retention, at most once per
        ``limits.purge_interval`` (run from the requests that make rows, so the schedule
        follows the app's clock and costs nothing while the service is idle)."""
        if self.last_purge is not None and now - self.last_purge < self.limits.purge_interval:
            return
        self.last_purge = now
        self.store.purge_expired_challenges(now)
        retention = self.limits.audit_retention
        purge_audit = getattr(self.store, "purge_audit", None)
        if retention is not None and purge_audit is not None:
            gone = int(purge_audit(now - retention))
            if gone:
                self.store.audit("audit_purged", events=gone, retention=retention)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _blocking(s: Service, func: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    # The store waits for durable commits: verifier calls run on the service's threads, never
    # on the event loop. The loop's own executor hand-off, not Starlette's run_in_threadpool:
    # anyio's limiter, cancel scope and task bookkeeping cost ~50 us a request, and a
    # ThreadPoolExecutor of the same size bounds the concurrency alike. A cancelled request
    # does not stop a call already running (neither did anyio's): its commit still happens.
    return asyncio.get_running_loop().run_in_executor(s.executor, func, *args)


@endpoint
async def healthz(request: Request) -> Response:
    s = _service(request)

    def check() -> int | None:
        state = s.store.get_revocation_state()
        return None if state is None else state[0]

    serial = await _blocking(s, check)
    return json_response(
        200,
        {
            "ok": True,
            "rp_id": s.rp_id,
            "revocation": "enforced" if s.revocation is not None else "off",
            "revocation_serial": serial,
        },
    )


@endpoint
async def challenge(request: Request) -> Response:
    s = _service(request)
    body = await read_json(request, s.max_body)
    fields(body, frozenset({"user", "purpose"}))
    user = text_field(body, "user", _MAX_USER)
    purpose_text = body.get("purpose")
    if purpose_text not in (Purpose.REGISTER.value, Purpose.AUTHENTICATE.value):
        malformed("purpose must be 'register' or 'authenticate'")
    purpose = Purpose(purpose_text)
    admin = bearer_ok(request, s.token_digest)
    if purpose is Purpose.REGISTER and not admin and not s.open_registration:
        raise Problem(401, "unauthorized", "registering a credential needs the admin token")

    def issue() -> Challenge:
        now = s.clock()
        s.purge_if_due(now)
        if purpose is Purpose.REGISTER and not admin:
            if s.store.credentials_for_user(user):
                raise Problem(
                    409, "user_exists", "this user is enrolled; adding a device needs the token"
                )
            # Self-service: the "no credential yet" rule is checked again, atomically, when
            # the challenge is redeemed (an early challenge must not outlive the sign-up).
            return issue_challenge(
                s.store, user=user, purpose=Purpose.SIGN_UP, ttl=s.challenge_ttl, now=now
            )
        # Anyone may ask for anyone's challenges: each lives its full TTL, so cap how many
        # one user can have waiting (the per-address rate limit alone does not bound it).
        if s.store.count_open_challenges(user, now) >= s.limits.max_open_challenges:
            raise Problem(
                429,
                "too_many_challenges",
                "this user has too many unused challenges; use one or wait for them to expire",
            )
        return issue_challenge(s.store, user=user, purpose=purpose, ttl=s.challenge_ttl, now=now)

    c = await _blocking(s, issue)
    return json_response(
        200, {"ok": True, **challenge_json(c), "rp_id": s.rp_id, "origin": s.origin}
    )


@endpoint
async def register(request: Request) -> Response:
    s = _service(request)
    body = await read_json(request, s.max_body)
    fields(body, frozenset({"user", "challenge", "credential"}))
    user = text_field(body, "user", _MAX_USER)
    value = b64url_field(body, "challenge")
    credential = object_field(body, "credential")

    def run() -> VerifiedRegistration:
        return verify_registration(
            credential=credential,
            expected_challenge=value,
            expected_origin=s.origin,
            expected_rp_id=s.rp_id,
            store=s.store,
            user=user,
            policy=s.policy,
            revocation_issuer_key=s.revocation_key(),
            now=s.clock(),
        )

    result = await _blocking(s, run)
    return json_response(200, {"ok": True, **registration_json(result)})


@endpoint
async def verify(request: Request) -> Response:
    """A refusal here also says, in words, what the RP decided and under which policy."""
    s = _service(request)
    effective = s.policy
    try:
        body = await read_json(request, s.max_body)
        fields(body, frozenset({"challenge", "credential"}), frozenset({"require_liveness"}))
        value = b64url_field(body, "challenge")
        credential = object_field(body, "credential")
        require_liveness = body.get("require_liveness", False)
        if type(require_liveness) is not bool:
            malformed("require_liveness must be true or false")
        if require_liveness:
            # The caller may only make the RP's policy stricter, never looser.
            effective = s.liveness_policy

        def run() -> VerifiedAssertion:
            s.purge_if_due(s.clock())  # each refused /verify adds an audit row
            return verify_assertion(
                credential=credential,
                expected_challenge=value,
                expected_origin=s.origin,
                expected_rp_id=s.rp_id,
                store=s.store,
                policy=effective,
                revocation_issuer_key=s.revocation_key(),
                now=s.clock(),
            )

        result: VerifiedAssertion = await _blocking(s, run)
    except (Problem, VerifierError) as exc:
        problem = as_problem(exc)
        return problem_response(
            problem.status,
            problem.reason,
            problem.message,
            decision=refused_decision(problem.reason, problem.message),
            policy=policy_json(effective),
        )
    view = assertion_json(result, effective, revocation_checked=s.revocation is not None)
    return json_response(200, {"ok": True, **view})


def _list_body(issuer: ListIssuer, rl: RevocationList, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "serial": rl.serial,
        "signed": b64url_encode(data),
        "issuer_public_key": b64url_encode(bytes(issuer.verify_key)),
        "list": revocation_list_to_json(rl),
        **extra,
    }


@endpoint
async def revoke(request: Request) -> Response:
    s = _service(request)
    # Authenticate before reading a byte of the body.
    if not bearer_ok(request, s.token_digest):
        raise Problem(401, "unauthorized", "this endpoint needs the admin bearer token")
    if s.revocation is None:
        raise Problem(404, "revocation_off", "this verifier has no revocation key")
    body = await read_json(request, s.max_body)
    fields(body, frozenset({"reason"}), frozenset(_REVOKE_TARGETS))
    targets = [k for k in _REVOKE_TARGETS if k in body]
    if len(targets) != 1:
        malformed("name exactly one of " + ", ".join(_REVOKE_TARGETS))
    entry = entry_from_text(targets[0], body[targets[0]], body["reason"], revoked_at=int(s.clock()))
    done = await _blocking(s, s.revocation.revoke, entry)
    return json_response(200, _list_body(s.revocation, done.list, done.data, changed=done.changed))


@endpoint
async def revocation_list(request: Request) -> Response:
    s = _service(request)
    if s.revocation is None:
        raise Problem(404, "revocation_off", "this verifier has no revocation key")
    found = await _blocking(s, s.revocation.current)
    if found is None:
        raise Problem(404, Reason.REVOCATION_LIST_MISSING.value, "no list installed yet")
    return json_response(200, _list_body(s.revocation, *found))


# -- the merchant side: a till asks for a payment, the student's device approves it -------

_PAY_FIELDS = frozenset({"user", "amount", "currency", "instrument_name", "instrument_icon"})
_PAY_OPTIONAL = frozenset({"payee_name", "payee_origin"})
_STEP_UP = (Reason.AMOUNT_ABOVE_METHOD_LIMIT.value, Reason.DAILY_LIMIT.value)


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    return None if body.get(name) is None else text_field(body, name)


@endpoint
async def payment_request(request: Request) -> Response:
    """A till creates a payment request (admin token: only the merchant charges). The answer
    is what the device shows and signs: the SPC ``payment`` member and a payment challenge."""
    s = _service(request)
    if not bearer_ok(request, s.token_digest):
        raise Problem(401, "unauthorized", "creating a payment request needs the admin token")
    body = await read_json(request, s.max_body)
    fields(body, _PAY_FIELDS, _PAY_OPTIONAL)
    user = text_field(body, "user", _MAX_USER)
    try:
        payment = PaymentDetails(
            rp_id=s.rp_id,
            top_origin=s.origin,
            payee_name=_optional_text(body, "payee_name"),
            payee_origin=_optional_text(body, "payee_origin"),
            total=Amount(text_field(body, "currency", 3), text_field(body, "amount", 32)),
            instrument=Instrument(
                text_field(body, "instrument_name"), text_field(body, "instrument_icon", 2048)
            ),
        )
    except ProtocolError as exc:
        malformed(exc.detail)
    request_id = secrets.token_hex(16)

    def issue() -> Challenge:
        now = s.clock()
        s.purge_if_due(now)
        c = issue_challenge(
            s.store, user=user, purpose=Purpose.PAYMENT, ttl=s.challenge_ttl, now=now
        )
        member = json.dumps(payment.to_json(), separators=(",", ":"), sort_keys=True)
        s.store.add_payment_request(request_id, c.value, user, member.encode(), now)
        return c

    c = await _blocking(s, issue)
    return json_response(
        200,
        {
            "ok": True,
            "request_id": request_id,
            **challenge_json(c),
            "rp_id": s.rp_id,
            "origin": s.origin,
            "payment": payment.to_json(),
        },
    )


@endpoint
async def payment_verify(request: Request) -> Response:
    """The till sends the device's authorisation for a request; a refusal names its reason
    and, for a limit, the methods a step-up may use."""
    s = _service(request)
    try:
        body = await read_json(request, s.max_body)
        fields(body, frozenset({"request_id", "credential"}))
        request_id = text_field(body, "request_id", 64)
        credential = object_field(body, "credential")

        def run() -> VerifiedPayment:
            found = s.store.get_payment_request(request_id)
            if found is None:
                raise Problem(404, "payment_request_unknown", "no such payment request")
            challenge_value, _user, member, _created = found
            try:
                expected = PaymentDetails.from_json(json.loads(member))
            except (ProtocolError, ValueError):
                raise VerifierError(Reason.STORAGE, "stored payment request is damaged") from None
            return verify_payment(
                credential=credential,
                expected_challenge=challenge_value,
                expected_origin=s.origin,
                expected_rp_id=s.rp_id,
                expected_payment=expected,
                store=s.store,
                payment_policy=s.payment_policy,
                policy=s.policy,
                revocation_issuer_key=s.revocation_key(),
                payment_id=request_id,
                now=s.clock(),
            )

        result: VerifiedPayment = await _blocking(s, run)
    except (Problem, VerifierError) as exc:
        problem = as_problem(exc)
        extra: dict[str, Any] = {"decision": refused_decision(problem.reason, problem.message)}
        if problem.reason in _STEP_UP:
            extra["step_up"] = True
        return problem_response(problem.status, problem.reason, problem.message, **extra)
    return json_response(
        200,
        {
            "ok": True,
            "receipt": receipt_json(result.record),
            "daily_total": result.daily_total,
            "decision": f"accepted: {result.payment.total} by {result.assertion.method.value}"
            f" ({result.assertion.assurance.value})",
        },
    )


@endpoint
async def payment_receipt(request: Request) -> Response:
    s = _service(request)
    if not bearer_ok(request, s.token_digest):
        raise Problem(401, "unauthorized", "receipts need the admin token")
    payment_id = str(request.path_params["payment_id"])
    if not 1 <= len(payment_id) <= 64:
        malformed("payment id must be 1..64 characters")
    record = await _blocking(s, s.store.get_payment, payment_id)
    if record is None:
        raise Problem(404, "payment_unknown", "no such authorised payment")
    return json_response(200, {"ok": True, "receipt": receipt_json(record)})


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/challenge", challenge, methods=["POST"]),
    Route("/register", register, methods=["POST"]),
    Route("/verify", verify, methods=["POST"]),
    Route("/revoke", revoke, methods=["POST"]),
    Route("/revocation", revocation_list, methods=["GET"]),
    Route("/pay/request", payment_request, methods=["POST"]),
    Route("/pay/verify", payment_verify, methods=["POST"]),
    Route("/pay/receipt/{payment_id}", payment_receipt, methods=["GET"]),
]
