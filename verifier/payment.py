"""Verify a payment authorisation in the W3C Secure Payment Confirmation shape.

A payment assertion is a devicebio assertion whose clientDataJSON has type ``payment.get``
and a ``payment`` member (see :mod:`devicebio.protocol.payment`). :func:`verify_payment`
runs every check of :func:`~verifier.assertion.verify_assertion` (challenge, credential,
origin, rpIdHash, flags, extension, signature over the received bytes, policy, revocation,
counter) on that type, plus:

1. the signed ``payment`` member must equal what the merchant asked for, member by member and
   character by character (payee, total, instrument, rpId, topOrigin): ``PAYMENT_MISMATCH``;
2. the :class:`PaymentPolicy` must let the method that verified the user approve the amount
   (``AMOUNT_ABOVE_METHOD_LIMIT``, with the methods that could: step up) and keep the user's
   rolling 24-hour total within the daily limit (``DAILY_LIMIT``), checked and recorded in one
   atomic step of the store.

A face approves a payment only with passed, challenge-bound liveness (a face without it is
``POLICY_LIVENESS_REQUIRED``). Every attempt burns its challenge, whatever it fails on.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing
from fido2.webauthn import CollectedClientData

from devicebio.protocol import (
    PAYMENT_TYPE,
    Amount,
    LivenessClaim,
    Method,
    PaymentDetails,
    client_payment,
)

from . import _webauthn as checks
from .assertion import VerifiedAssertion, _one_transaction, _verify, redeem_and_parse
from .challenges import Purpose
from .errors import Reason, VerifierError, protocol_errors
from .policy import Policy
from .store import PaymentRecord, Store

__all__ = ["PaymentPolicy", "VerifiedPayment", "verify_payment"]

#: The daily limit is over a rolling window, not a calendar day: no time zone to agree on.
DAY = 86_400.0


def _micros(value: str | None, currency: str, what: str) -> int | None:
    if value is None:
        return None
    try:
        return Amount(currency, value).micros
    except Exception:
        raise VerifierError(Reason.MALFORMED, f"{what} must be a decimal string") from None


@dataclass(frozen=True)
class PaymentPolicy:
    """Which methods may approve which amounts, in one currency. Limits are decimal strings
    (``None``: the method never approves a payment).

    - ``face_with_liveness``: a face with passed challenge-bound liveness;
    - ``pin``, ``security_key``, ``recovery``: those methods;
    - ``daily_limit``: the most a user's payments may add up to over 24 hours (``None``: no
      daily limit). Past it, only ``step_up`` methods approve (each up to its own limit).

    Defaults suit a school canteen: face up to 20.00, PIN for small amounts up to 5.00, a
    security key (the step-up) up to 200.00, 30.00 a day without step-up, recovery never.
    """

    currency: str = "EUR"
    face_with_liveness: str | None = "20.00"
    pin: str | None = "5.00"
    security_key: str | None = "200.00"
    recovery: str | None = None
    daily_limit: str | None = "30.00"
    step_up: frozenset[Method] = frozenset({Method.SECURITY_KEY})

    def __post_init__(self) -> None:
        try:
            Amount(self.currency, "0")
        except Exception:
            raise VerifierError(Reason.MALFORMED, "currency must be ISO 4217 (EUR)") from None
        for name in ("face_with_liveness", "pin", "security_key", "recovery", "daily_limit"):
            _micros(getattr(self, name), self.currency, name)
        try:
            object.__setattr__(self, "step_up", frozenset(Method(m) for m in self.step_up))
        except (TypeError, ValueError):
            raise VerifierError(Reason.MALFORMED, "step_up holds an unknown method") from None

    def limit_for(self, method: Method, liveness: LivenessClaim) -> int | None:
        """The most ``method`` may approve, in millionths (``None``: nothing at all)."""
        if method is Method.FACE:
            value = self.face_with_liveness if liveness.passed else None
        elif method is Method.PIN:
            value = self.pin
        elif method is Method.SECURITY_KEY:
            value = self.security_key
        else:
            value = self.recovery
        return _micros(value, self.currency, method.value)

    @property
    def daily_micros(self) -> int | None:
        return _micros(self.daily_limit, self.currency, "daily_limit")

    def methods_for(self, amount_micros: int) -> list[str]:
        """The methods that could approve ``amount_micros`` (what a step-up may use)."""
        passed = LivenessClaim("active-challenge", True, b"\0" * 32, 1)
        out = []
        for method in Method:
            limit = self.limit_for(
                method, passed if method is Method.FACE else LivenessClaim.none()
            )
            if limit is not None and amount_micros <= limit:
                out.append(method.value)
        return out


@dataclass(frozen=True)
class VerifiedPayment:
    """An authorised payment, already recorded. ``record`` is what the store kept and what
    the merchant's receipt shows (:func:`verifier.views.receipt_json`); its ``payment_id`` is
    also the key of the ``payment_authorised`` audit event."""

    payment_id: str
    payment: PaymentDetails
    assertion: VerifiedAssertion
    daily_total: str  # the user's 24-hour total including this payment, as a decimal string
    record: PaymentRecord


def _value(micros: int) -> str:
    """Millionths as a decimal string with at least two decimals (4300000 -> "4.30")."""
    whole, frac = divmod(micros, 1_000_000)
    return f"{whole}.{f'{frac:06d}'.rstrip('0').ljust(2, '0')}"


def _expected(payment: object, rp_id: str) -> PaymentDetails:
    if not isinstance(payment, PaymentDetails):
        raise VerifierError(Reason.MALFORMED, "expected_payment must be a PaymentDetails")
    if payment.rp_id != rp_id:
        raise VerifierError(Reason.MALFORMED, "expected_payment.rp_id must be expected_rp_id")
    return payment


def _check_payment(client_data: CollectedClientData, expected: PaymentDetails) -> None:
    with protocol_errors():
        signed = client_payment(client_data)
    if signed is None:  # a payment.get always has one (client_payment ensures it)
        raise VerifierError(Reason.MALFORMED, "no payment member")
    if signed != expected:
        # One reason for every member (the user approved something else than this); the
        # message names which members differ, never their values.
        mine, theirs = expected.to_json(), signed.to_json()
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise VerifierError(
            Reason.PAYMENT_MISMATCH,
            f"the signed payment differs from the one asked for in {', '.join(differ)}",
        )


@_one_transaction
def verify_payment(
    *,
    credential: Mapping[str, Any] | str | bytes,
    expected_challenge: bytes,
    expected_origin: str,
    expected_rp_id: str,
    expected_payment: PaymentDetails,
    store: Store,
    payment_policy: PaymentPolicy = PaymentPolicy(),
    policy: Policy = Policy(),  # noqa: B008 - frozen, immutable default
    revocation_issuer_key: nacl.signing.VerifyKey | None = None,
    payment_id: str | None = None,
    now: float | None = None,
) -> VerifiedPayment:
    """Verify and record a payment authorisation (see the module docstring).

    ``expected_challenge`` must have been issued for ``Purpose.PAYMENT`` and the paying user;
    ``expected_payment`` is what the merchant asked the user to approve. ``payment_id``
    names the receipt (a random one by default); it is the audit trail's key too.
    """
    checks.check_expectations(expected_origin, expected_rp_id)
    expected = _expected(expected_payment, expected_rp_id)
    if not isinstance(payment_policy, PaymentPolicy) or not isinstance(policy, Policy):
        raise VerifierError(Reason.MALFORMED, "payment_policy / policy of the wrong type")
    if expected.total.currency != payment_policy.currency:
        raise VerifierError(Reason.MALFORMED, "the payment policy has no limits in this currency")
    checks.check_revocation_key(revocation_issuer_key)
    pid = secrets.token_hex(16) if payment_id is None else payment_id
    if not isinstance(pid, str) or not 1 <= len(pid) <= 64:
        raise VerifierError(Reason.MALFORMED, "payment_id must be a str of 1..64 characters")
    at = time.time() if now is None else float(now)
    credential_id_hex: str | None = None
    try:
        challenge, parsed, stored = redeem_and_parse(
            store, credential, expected_challenge, Purpose.PAYMENT, now
        )
        credential_id_hex = parsed.credential_id.hex()
        verified = _verify(
            parsed,
            stored,
            expected_type=PAYMENT_TYPE,
            check_client=lambda client_data: _check_payment(client_data, expected),
            challenge=challenge,
            expected_challenge=expected_challenge,
            expected_origin=expected_origin,
            expected_rp_id=expected_rp_id,
            store=store,
            # A face approves money only with liveness bound to this very challenge.
            policy=dataclasses.replace(policy, require_liveness=True),
            revocation_issuer_key=revocation_issuer_key,
            now=now,
        )
        record = _authorise(verified, expected, payment_policy, store, pid, at)
    except VerifierError as exc:
        checks.audit_refusal(
            store, "payment_refused", exc, credential_id=credential_id_hex, payment_id=pid
        )
        raise
    total = store.payment_total(record.user, record.currency, at - DAY)
    store.audit(
        "payment_authorised",
        payment_id=pid,
        credential_id=credential_id_hex,
        user=record.user,
        amount=expected.total.value,
        currency=expected.total.currency,
        method=record.method,
        assurance=record.assurance,
        sign_count=record.sign_count,
    )
    return VerifiedPayment(
        payment_id=pid,
        payment=expected,
        assertion=verified,
        daily_total=_value(total),
        record=record,
    )


def _authorise(
    verified: VerifiedAssertion,
    payment: PaymentDetails,
    rules: PaymentPolicy,
    store: Store,
    payment_id: str,
    at: float,
) -> PaymentRecord:
    amount = payment.total.micros
    limit = rules.limit_for(verified.method, verified.liveness)
    if limit is None or amount > limit:
        could = [m for m in rules.methods_for(amount) if m != verified.method.value]
        raise VerifierError(
            Reason.AMOUNT_ABOVE_METHOD_LIMIT,
            f"{verified.method.value} may not approve {payment.total}"
            + (f"; step up with {', '.join(could)}" if could else "; no method may"),
        )
    record = PaymentRecord(
        payment_id=payment_id,
        user=verified.user,
        credential_id=verified.credential_id,
        currency=payment.total.currency,
        amount_micros=amount,
        payment=_payment_json(payment),
        method=verified.method.value,
        assurance=verified.assurance.value,
        sign_count=verified.new_sign_count,
        authorised_at=at,
    )
    daily = None if verified.method in rules.step_up else rules.daily_micros
    if store.add_payment(record, limit=daily, since=at - DAY) is None:
        steps = sorted(m.value for m in rules.step_up)
        raise VerifierError(
            Reason.DAILY_LIMIT,
            f"the 24-hour total would pass {rules.daily_limit} {rules.currency}"
            + (f"; step up with {', '.join(steps)}" if steps else ""),
        )
    return record


def _payment_json(payment: PaymentDetails) -> bytes:
    return json.dumps(payment.to_json(), separators=(",", ":"), sort_keys=True).encode()
