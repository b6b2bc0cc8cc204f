"""Challenges: random, single use, short-lived, bound to one user and one purpose.

A challenge is redeemed (marked used) on the first attempt whatever its outcome, so a wrong
purpose, a wrong user or a late answer all burn it: an attacker cannot probe with it and then
hand it to the legitimate ceremony.
"""

from __future__ import annotations

import enum
import hmac
import math
import secrets
import time
from dataclasses import dataclass

from devicebio.protocol.encoding import quick_init
from verifier.errors import Reason, VerifierError
from verifier.store import CredentialRecord, Store
from verifier.store.base import use_challenge_and_get_credential

__all__ = [
    "DEFAULT_SIZE",
    "DEFAULT_TTL",
    "MIN_SIZE",
    "Challenge",
    "Purpose",
    "consume_challenge",
    "issue_challenge",
]

#: WebAuthn asks for at least 16 random bytes; 32 leaves a wide margin.
MIN_SIZE = 16
DEFAULT_SIZE = 32
MAX_SIZE = 1024
#: Seconds a challenge stays redeemable (WebAuthn's recommended ceremony timeout is 300 s).
DEFAULT_TTL = 300.0


class Purpose(enum.StrEnum):
    REGISTER = "register"
    AUTHENTICATE = "authenticate"
    #: A register challenge anyone may ask for (self-service sign-up): it can only ever store
    #: the user's FIRST credential, checked when it is redeemed, not only when it is issued.
    SIGN_UP = "sign_up"
    #: A payment authorisation (Secure Payment Confirmation): never redeemable as a sign-in.
    PAYMENT = "payment"


# What a ceremony may redeem: a registration accepts both kinds of register challenge.
_REDEEMS = {
    Purpose.REGISTER: frozenset({Purpose.REGISTER.value, Purpose.SIGN_UP.value}),
    Purpose.AUTHENTICATE: frozenset({Purpose.AUTHENTICATE.value}),
    Purpose.SIGN_UP: frozenset({Purpose.SIGN_UP.value}),
    Purpose.PAYMENT: frozenset({Purpose.PAYMENT.value}),
}


_REDEEMS_UTF8 = {k: tuple(p.encode() for p in v) for k, v in _REDEEMS.items()}
_BY_VALUE = {p.value.encode(): p for p in Purpose}


@quick_init  # built on every verification: see quick_init
@dataclass(frozen=True)
class Challenge:
    value: bytes
    user: str
    purpose: Purpose
    expires_at: float


def _purpose(purpose: object) -> Purpose:
    if type(purpose) is Purpose:
        return purpose
    if not isinstance(purpose, str):
        raise VerifierError(Reason.MALFORMED, "purpose must be a Purpose")
    try:
        return Purpose(purpose)
    except ValueError as exc:
        raise VerifierError(Reason.MALFORMED, f"unknown challenge purpose {purpose!r}") from exc


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _now(now: float | None) -> float:
    value = time.time() if now is None else now
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VerifierError(Reason.MALFORMED, "now must be a finite number")
    return float(value)


def issue_challenge(
    store: Store,
    *,
    user: str,
    purpose: Purpose,
    ttl: float = DEFAULT_TTL,
    size: int = DEFAULT_SIZE,
    now: float | None = None,
) -> Challenge:
    """Create, store and return a fresh challenge for ``user`` and ``purpose``.

    ``size`` below 16 bytes is refused (``MALFORMED``): shorter challenges are guessable
    enough to make replay planning realistic.
    """
    if type(size) is not int or not MIN_SIZE <= size <= MAX_SIZE:
        raise VerifierError(
            Reason.MALFORMED, f"challenge size must be {MIN_SIZE}..{MAX_SIZE} bytes, got {size!r}"
        )
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise VerifierError(Reason.MALFORMED, "ttl must be a finite number of seconds")
    if ttl <= 0:
        raise VerifierError(Reason.MALFORMED, "ttl must be positive")
    if not isinstance(user, str) or not user:
        raise VerifierError(Reason.MALFORMED, "user must be a non-empty str")
    checked = _purpose(purpose)
    challenge = Challenge(
        value=secrets.token_bytes(size),
        user=user,
        purpose=checked,
        expires_at=_now(now) + float(ttl),
    )
    store.insert_challenge(challenge.value, user, checked.value, challenge.expires_at)
    return challenge


def consume_challenge(
    store: Store,
    value: bytes,
    *,
    purpose: Purpose,
    user: str | None = None,
    now: float | None = None,
) -> Challenge:
    """Redeem ``value`` once. Returns the stored challenge if it is fresh, unexpired and was
    issued for ``purpose`` (and ``user``, when given); otherwise raises ``VerifierError`` with
    ``CHALLENGE_UNKNOWN``, ``CHALLENGE_REUSED``, ``CHALLENGE_EXPIRED``,
    ``CHALLENGE_WRONG_PURPOSE`` or ``CHALLENGE_WRONG_USER``.

    ``user=None`` is for usernameless (discoverable-credential) sign-in, where the user is
    learned from the credential; the caller must then compare ``result.user`` itself.
    """
    return _consume(store, value, purpose, user, now, None)[0]


def consume_challenge_for(
    store: Store,
    value: bytes,
    credential_id: bytes,
    *,
    purpose: Purpose,
    now: float | None = None,
) -> tuple[Challenge, CredentialRecord | None]:
    """:func:`consume_challenge` (``user=None``) that also reads the credential the response
    names, in the same store statement when the store can: the challenge, its refusals and
    their order are exactly :func:`consume_challenge`'s; the record is the store's
    ``get_credential(credential_id)``."""
    if not isinstance(credential_id, bytes):
        raise VerifierError(Reason.MALFORMED, "credential_id must be bytes")
    return _consume(store, value, purpose, None, now, credential_id)


def _consume(
    store: Store,
    value: bytes,
    purpose: Purpose,
    user: str | None,
    now: float | None,
    credential_id: bytes | None,
) -> tuple[Challenge, CredentialRecord | None]:
    expected_purpose = _purpose(purpose)
    if user is not None and not isinstance(user, str):
        raise VerifierError(Reason.MALFORMED, "user must be a str or None")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise VerifierError(Reason.MALFORMED, "challenge must be bytes")
    value = bytes(value)
    current = _now(now)
    if not MIN_SIZE <= len(value) <= MAX_SIZE:
        # Never issued by issue_challenge: no need to touch the store.
        raise VerifierError(Reason.CHALLENGE_UNKNOWN, "challenge of impossible length")
    record: CredentialRecord | None = None
    if credential_id is None:
        found = store.use_challenge(value)
    else:
        found, record = use_challenge_and_get_credential(store, value, credential_id)
    if found is None:
        raise VerifierError(Reason.CHALLENGE_UNKNOWN, "challenge was not issued here")
    stored_user, stored_purpose, expires_at, was_used = found
    if was_used:
        raise VerifierError(Reason.CHALLENGE_REUSED, "challenge was already used")
    if current > expires_at:
        raise VerifierError(Reason.CHALLENGE_EXPIRED, "challenge has expired")
    stored = _utf8(stored_purpose)
    if not any(hmac.compare_digest(stored, p) for p in _REDEEMS_UTF8[expected_purpose]):
        raise VerifierError(
            Reason.CHALLENGE_WRONG_PURPOSE,
            f"challenge was issued to {stored_purpose}, not {expected_purpose.value}",
        )
    if user is not None and not hmac.compare_digest(_utf8(stored_user), _utf8(user)):
        raise VerifierError(Reason.CHALLENGE_WRONG_USER, "challenge was issued to another user")
    challenge = Challenge(
        value=value, user=stored_user, purpose=_BY_VALUE[stored], expires_at=expires_at
    )
    return challenge, record
