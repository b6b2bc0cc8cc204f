"""Issuing revocation lists: the ONE way the next list is built, signed and installed.

``verifier revoke``, ``verifier revocation publish`` and the HTTP service's ``/revoke`` and
renewals all call :func:`publish`, so they cannot disagree about what "revoke" means:

- **The next list** is the list in force (verified with our own key first: a tampered
  database must not get its entries laundered into a list we sign) plus the new entry,
  serial + 1, ``this_update`` = now, ``next_update`` = now + validity.
- **A duplicate entry is a no-op.** Revoking what the list in force already names changes
  nothing: no list is signed or installed, and the answer says ``changed=False`` and carries
  the entry in force (with its original reason and time). Revocation is a statement about set
  membership, so asking twice has the effect of asking once, and an operator or client that
  retries after a timeout (it cannot tell whether the first attempt landed) gets the same list
  instead of an error. Refusing, as the CLI once did, made every retry look like a failure.
- **One retry policy** for a lost race (another process installed the same serial first,
  ``REVOCATION_LIST_ROLLBACK``): rebuild on top of the winner's list, up to
  ``RetryPolicy.attempts`` times, waiting ``step * (attempt + 1)`` plus a random jitter of up
  to ``jitter`` seconds. The growing step lets a burst of racers drain; the jitter keeps
  processes started together (a script revoking in parallel) from retrying in lock-step.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import nacl.signing

from verifier.errors import Reason, VerifierError
from verifier.store import Store
from verifier.views import b64url_text

from .codec import (
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    parse_revocation_list,
    sign_revocation_list,
)
from .enforce import install_revocation_list
from .mark import MarkedStore, SerialMark

__all__ = [
    "DEFAULT_ISSUER",
    "DEFAULT_VALIDITY",
    "RETRY",
    "ListIssuer",
    "Publication",
    "RetryPolicy",
    "entry_from_text",
    "publish",
]

DEFAULT_ISSUER = "verifier"
DEFAULT_VALIDITY = 30 * 86_400.0
_MAX_VALIDITY = 3650 * 86_400.0
_MAX_ID_BYTES = 1023
_TARGETS = {
    "credential_id": EntryKind.CREDENTIAL_ID,
    "device_id": EntryKind.DEVICE_KEY,
    "model_id": EntryKind.MODEL_ID,
    "sdk_version": EntryKind.SDK_VERSION,
}


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`publish` retries after losing a race to another installer."""

    attempts: int = 10
    step: float = 0.01
    jitter: float = 0.04

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based); ``draw`` in [0, 1)."""
        return self.step * (attempt + 1) + self.jitter * draw


RETRY = RetryPolicy()


@dataclass(frozen=True)
class Publication:
    """What :func:`publish` left in force. ``changed`` is False when the entry was already
    listed: then ``list``/``data`` are the list in force, untouched."""

    list: RevocationList
    data: bytes
    changed: bool


def _listed(rl: RevocationList | None, entry: RevocationEntry) -> RevocationEntry | None:
    if rl is None:
        return None
    for old in rl.entries:
        if old.kind is entry.kind and old.value == entry.value:
            return old
    return None


def _jitter_draw() -> float:
    return secrets.randbelow(1_000_000) / 1_000_000


def publish(
    store: Store,
    key: nacl.signing.SigningKey,
    entry: RevocationEntry | None = None,
    *,
    validity: float = DEFAULT_VALIDITY,
    issuer: str | None = None,
    default_issuer: str = DEFAULT_ISSUER,
    clock: Callable[[], float] = time.time,
    retry: RetryPolicy = RETRY,
    sleep: Callable[[float], None] = time.sleep,
    mark: SerialMark | None = None,
) -> Publication:
    """Sign and install the next list: the one in force plus ``entry``, or (``entry=None``)
    the same entries re-signed with a new validity window (the first, empty list; renewals).

    ``issuer`` names the new list; ``None`` keeps the name of the list in force, else
    ``default_issuer``. ``validity`` is in seconds, in (0, 3650 days]. Audits ``revoked``
    (an entry was added) or ``revocation_list_published`` (a re-signed list).

    Raises ``VerifierError``: ``MALFORMED`` for bad arguments,
    ``REVOCATION_LIST_BAD_SIGNATURE`` when the list in force is not signed by ``key``,
    ``REVOCATION_LIST_ROLLBACK`` when every attempt lost a race, ``STORAGE``.

    ``mark`` is the issuer's :class:`~verifier.revocation.mark.SerialMark` (``verifier
    revoke``, ``revocation publish`` and the HTTP service always pass the one beside the key
    file). With it no serial is ever signed twice or below one published: a database
    restored from an older copy is first healed with the marked list (signed by this key, so
    nothing revoked is lost) and the new list is built on top of it; a database that holds a
    list while the mark is missing is refused (``REVOCATION_LIST_ROLLBACK``).
    """
    if not isinstance(key, nacl.signing.SigningKey):
        raise VerifierError(Reason.MALFORMED, "key must be a nacl.signing.SigningKey")
    if entry is not None and not isinstance(entry, RevocationEntry):
        raise VerifierError(Reason.MALFORMED, "entry must be a RevocationEntry or None")
    if (
        isinstance(validity, bool)
        or not isinstance(validity, int | float)
        or not math.isfinite(validity)
        or not 0 < validity <= _MAX_VALIDITY
    ):
        raise VerifierError(Reason.MALFORMED, "validity must be in (0, 3650 days] seconds")
    if type(retry.attempts) is not int or retry.attempts < 1:
        raise VerifierError(Reason.MALFORMED, "retry.attempts must be at least 1")
    verify_key = key.verify_key
    if mark is not None:
        if bytes(mark.issuer_key) != bytes(verify_key):
            raise VerifierError(Reason.MALFORMED, "the serial mark is not this key's")
        store = mark.guard(store)
        _heal_from_mark(store, mark)
    for attempt in range(retry.attempts):
        now = int(clock())
        try:
            # Reading the list in force is inside the retry too: with a serial mark, another
            # publisher may be between writing the database and raising the mark.
            state = store.get_revocation_state()
            previous = None if state is None else parse_revocation_list(state[1], verify_key)
            if entry is not None and _listed(previous, entry) is not None:
                assert state is not None and previous is not None
                return Publication(previous, state[1], changed=False)
            entries = () if previous is None else previous.entries
            rl = RevocationList(
                issuer=issuer or (previous.issuer if previous is not None else default_issuer),
                serial=1 if state is None else state[0] + 1,
                this_update=now,
                next_update=now + max(1, int(validity)),
                entries=entries if entry is None else (*entries, entry),
            )
            data = sign_revocation_list(rl, key)
            install_revocation_list(store, data, verify_key, now=now)
        except VerifierError as exc:
            # Another publisher installed this serial first: rebuild on top of its list
            # rather than lose either entry.
            if exc.reason is not Reason.REVOCATION_LIST_ROLLBACK or attempt == retry.attempts - 1:
                raise
            sleep(retry.delay(attempt, _jitter_draw()))
            continue
        if entry is not None:
            store.audit(
                "revoked", kind=entry.kind.value, reason=entry.reason.value, serial=rl.serial
            )
        else:
            store.audit("revocation_list_published", serial=rl.serial)
        return Publication(rl, data, changed=True)
    raise AssertionError("unreachable")  # pragma: no cover


def _heal_from_mark(store: MarkedStore, mark: SerialMark) -> None:
    # A database restored from an older copy lags the mark: put the marked list (ours, and
    # the newest ever installed) back before building on it, even if it has gone stale
    # meanwhile, since the list built next replaces it at once.
    marked = mark.read()
    state = store.unchecked_revocation_state()
    if marked is None or (state is not None and state[0] >= marked[0]):
        return
    store.set_revocation_state(marked[0], marked[1])
    store.audit(
        "revocation_list_restored_from_mark",
        serial=marked[0],
        database_serial=None if state is None else state[0],
    )


def entry_from_text(target: str, value: str, reason: str, *, revoked_at: int) -> RevocationEntry:
    """Build an entry from what an operator typed or a client sent: ``target`` is one of
    ``credential_id`` (base64url), ``device_id`` (hex), ``model_id`` or ``sdk_version``
    (text); ``reason`` a :class:`RevocationReason` value, case and ``-``/``_`` insensitive.
    Raises ``VerifierError(MALFORMED)`` saying what is wrong."""
    kind = _TARGETS.get(target)
    if kind is None:
        raise VerifierError(Reason.MALFORMED, "name one of " + ", ".join(_TARGETS))
    reason_text = reason.strip().lower().replace("-", "_") if isinstance(reason, str) else ""
    try:
        why = RevocationReason(reason_text)
    except ValueError:
        choices = ", ".join(r.value for r in RevocationReason)
        raise VerifierError(
            Reason.MALFORMED, f"unknown reason {reason!r}; one of {choices}"
        ) from None
    if not isinstance(value, str) or not 1 <= len(value) <= 2 * _MAX_ID_BYTES:
        raise VerifierError(Reason.MALFORMED, f"{target} must be 1..{2 * _MAX_ID_BYTES} characters")
    parsed: bytes | str
    if kind is EntryKind.CREDENTIAL_ID:
        parsed = b64url_text(value, target)
    elif kind is EntryKind.DEVICE_KEY:
        try:
            parsed = bytes.fromhex(value)
        except ValueError:
            raise VerifierError(Reason.MALFORMED, f"{target} must be hex") from None
    else:
        if len(value) > 256:
            raise VerifierError(Reason.MALFORMED, f"{target} must be 1..256 characters")
        parsed = value
    if isinstance(parsed, bytes) and not 1 <= len(parsed) <= _MAX_ID_BYTES:
        raise VerifierError(Reason.MALFORMED, f"{target} must be 1..{_MAX_ID_BYTES} bytes")
    return RevocationEntry(kind=kind, value=parsed, reason=why, revoked_at=revoked_at)


class ListIssuer:
    """An RP's own list, kept in force and fresh (the HTTP service holds one).

    :meth:`ensure_fresh` publishes the first (empty) list, and renews the one in force once
    half its validity has gone, so verification never fails closed merely because nobody
    re-signed. One lock per issuer keeps its own threads from racing each other; racing
    processes (e.g. ``verifier revoke`` on the same database) are :func:`publish`'s retries.
    """

    def __init__(
        self,
        store: Store,
        key: nacl.signing.SigningKey,
        *,
        issuer: str = DEFAULT_ISSUER,
        validity: float = DEFAULT_VALIDITY,
        clock: Callable[[], float] = time.time,
        mark: SerialMark | None = None,
    ) -> None:
        self.mark = mark
        self.store: Store = store if mark is None else mark.guard(store)
        self.key = key
        self.issuer = issuer
        self.validity = validity
        self.clock = clock
        self._lock = threading.Lock()
        self._parsed: tuple[RevocationList, bytes] | None = None

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.key.verify_key

    def current(self) -> tuple[RevocationList, bytes] | None:
        """The list in force and its bytes, verified with this issuer's key."""
        state = self.store.get_revocation_state()
        if state is None:
            return None
        data = state[1]
        cached = self._parsed
        if cached is not None and cached[1] == data:
            return cached
        # Verified before it is remembered; the cache keys on the exact bytes.
        parsed = (parse_revocation_list(data, self.verify_key), data)
        self._parsed = parsed
        return parsed

    def _fresh(self) -> bool:
        try:
            found = self.current()
        except VerifierError as exc:
            # A restored database lags the mark: publishing heals it (see publish).
            if exc.reason is Reason.REVOCATION_LIST_ROLLBACK and self.mark is not None:
                return False
            raise
        if found is None:
            return False
        rl = found[0]
        return rl.next_update - self.clock() > (rl.next_update - rl.this_update) / 2

    def ensure_fresh(self) -> None:
        if self._fresh():  # the common case, without taking the lock
            return
        with self._lock:
            if not self._fresh():
                self._publish(None)

    def revoke(self, entry: RevocationEntry) -> Publication:
        with self._lock:
            return self._publish(entry)

    def _publish(self, entry: RevocationEntry | None) -> Publication:
        return publish(
            self.store,
            self.key,
            entry,
            validity=self.validity,
            default_issuer=self.issuer,
            clock=self.clock,
            mark=self.mark,
        )
