"""``create_app``: check the configuration, open the store, and wire the routes."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from verifier.challenges import DEFAULT_TTL
from verifier.errors import Reason, VerifierError
from verifier.keys import load_signing_key
from verifier.payment import PaymentPolicy
from verifier.policy import Policy
from verifier.revocation.issue import DEFAULT_ISSUER, ListIssuer
from verifier.revocation.mark import SerialMark
from verifier.store import Store, open_store

from .http import (
    DEFAULT_MAX_BODY,
    Limits,
    LimitsMiddleware,
    http_error,
    server_error,
    token_digest,
)
from .routes import ROUTES, Service

__all__ = ["create_app"]

_MIN_ADMIN_TOKEN = 16
_DEFAULT_VALIDITY_DAYS = 30.0


def create_app(
    *,
    db: str | Path,
    rp_id: str,
    origin: str,
    revocation_key_file: str | Path | None,
    policy: Policy | None = None,
    payment_policy: PaymentPolicy | None = None,
    admin_token: str | None = None,
    open_registration: bool = False,
    max_body: int = DEFAULT_MAX_BODY,
    challenge_ttl: float = DEFAULT_TTL,
    revocation_validity_days: float = _DEFAULT_VALIDITY_DAYS,
    issuer: str = DEFAULT_ISSUER,
    clock: Callable[[], float] = time.time,
    limits: Limits | None = None,
) -> Starlette:
    """Build the relying-party app on the store ``db`` names: ``postgresql://...`` (shared by
    any number of verifier processes), ``sqlite:///path`` or a plain SQLite path (see
    :func:`verifier.store.open_store`).

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

    The merchant side (``/pay/request`` and ``/pay/receipt/{id}`` with the admin token, the
    till's; ``/pay/verify``) settles payments under ``payment_policy`` (default
    :class:`~verifier.payment.PaymentPolicy`: face with liveness up to 20.00 EUR, PIN up to
    5.00, a security key up to 200.00, 30.00 a day without step-up).

    The highest list serial ever installed is kept in ``<revocation_key_file>.serial`` (the
    serial mark, :mod:`verifier.revocation.mark`): keep and back it up with the key, not with
    the database. A database restored from an older copy is healed from it at start.

    ``limits`` (:class:`~verifier.server.http.Limits`, defaults when ``None``) bounds what
    one client may cost: connection and body timeouts, concurrency, a per-address rate limit
    on ``/challenge`` and ``/verify``, outstanding challenges per user, audit retention.
    ``clock`` drives the rate limit and the purges too (tests inject it).

    Raises ``VerifierError``: ``MALFORMED`` for bad arguments or key file, ``STORAGE`` when
    the database or key cannot be opened, or the list in force is not this key's,
    ``REVOCATION_LIST_ROLLBACK`` when the database holds a list but the mark is missing.
    """
    if policy is None:
        policy = Policy()
    if not isinstance(policy, Policy):
        raise VerifierError(Reason.MALFORMED, "policy must be a Policy")
    if payment_policy is not None and not isinstance(payment_policy, PaymentPolicy):
        raise VerifierError(Reason.MALFORMED, "payment_policy must be a PaymentPolicy")
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
    if limits is None:
        limits = Limits()
    if not isinstance(limits, Limits):
        raise VerifierError(Reason.MALFORMED, "limits must be a Limits")
    key = None if revocation_key_file is None else load_signing_key(revocation_key_file)

    base = open_store(db)
    store: Store = base
    revocation: ListIssuer | None = None
    if key is not None:
        assert revocation_key_file is not None
        # The highest serial ever installed is kept beside the key, outside the database:
        # a restored database can neither un-revoke nor make us sign a serial twice.
        mark = SerialMark.beside_key(revocation_key_file, key.verify_key)
        store = mark.guard(store)
        revocation = ListIssuer(
            store,
            key,
            mark=mark,
            issuer=issuer,
            validity=revocation_validity_days * 86_400,
            clock=clock,
        )
        try:
            # At start: a list this key did not sign, or no list, should show now, not on
            # the first sign-in.
            revocation.ensure_fresh()
        except VerifierError:
            base.close()
            raise
    service = Service(
        store=store,
        policy=policy,
        rp_id=rp_id,
        origin=origin,
        revocation=revocation,
        token_digest=None if admin_token is None else token_digest(admin_token),
        open_registration=open_registration,
        max_body=max_body,
        challenge_ttl=challenge_ttl,
        clock=clock,
        payment_policy=payment_policy or PaymentPolicy(),
        limits=limits,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # Every verifier call finishes before its store closes.
            service.executor.shutdown(wait=True)
            base.close()

    app = Starlette(
        routes=ROUTES,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
        middleware=[Middleware(LimitsMiddleware, limits=limits, clock=clock)],
    )
    app.state.limits = limits  # the connection-level ones are applied by server.run
    app.state.service = service
    app.state.store = store
    app.state.policy = policy
    return app
