"""Enforcing revocation lists: install one (refusing rollback and staleness) and check an
identifier against the list in force.

``install_revocation_list`` refuses a serial lower than the highest one seen
(``REVOCATION_LIST_ROLLBACK``) and accepts the same serial again only with identical bytes.
``check_not_revoked`` fails closed: no list installed (when ``required``), a list past its
``next_update`` (``REVOCATION_LIST_STALE``) or a list that no longer verifies all refuse.
"""

from __future__ import annotations

import functools
import math
import time

import nacl.signing

from verifier.errors import Reason, VerifierError
from verifier.store import Store

from .codec import EntryKind, RevocationList, parse_revocation_list

__all__ = ["check_not_revoked", "install_revocation_list"]


def _bad(message: str) -> VerifierError:
    return VerifierError(Reason.MALFORMED, message)


_Index = dict[tuple[EntryKind, bytes | str], int]


@functools.lru_cache(maxsize=8)
def _parse_cached(data: bytes, key: bytes) -> tuple[RevocationList, _Index]:
    # check_not_revoked runs on every assertion; re-verifying an unchanged list each time
    # buys nothing. Cache hits need the very same bytes AND key, so nothing weaker is trusted.
    # The index (first position of each (kind, value)) makes each lookup O(1) instead of a
    # scan of every entry; hashing and comparing the list's bytes for the cache is C speed.
    rl = parse_revocation_list(data, nacl.signing.VerifyKey(key))
    index: _Index = {}
    for position, entry in enumerate(rl.entries):
        index.setdefault((entry.kind, entry.value), position)
    return rl, index


def _now(now: float | None) -> float:
    value = time.time() if now is None else now
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad("now must be a finite number")
    return float(value)


def install_revocation_list(
    store: Store, data: bytes, issuer_key: nacl.signing.VerifyKey, *, now: float | None = None
) -> RevocationList:
    """Verify ``data`` and make it the list in force.

    Refuses a serial below the highest seen, or the same serial with other bytes
    (``REVOCATION_LIST_ROLLBACK``), and a list already past its ``next_update``
    (``REVOCATION_LIST_STALE``: installing it would only make every check fail). Installing
    the list already in force again is a no-op.
    """
    rl = parse_revocation_list(data, issuer_key)
    data = bytes(data)
    current_time = _now(now)
    if current_time > rl.next_update:
        raise VerifierError(
            Reason.REVOCATION_LIST_STALE, f"list serial {rl.serial} is past its next_update"
        )
    # Behind a serial mark, compare with the database's own state even when it lags the
    # mark: installing the marked list (or a newer one) is how a restored database heals;
    # the marked store still refuses anything older than the mark.
    unchecked = getattr(store, "unchecked_revocation_state", None)
    state = unchecked() if unchecked is not None else store.get_revocation_state()
    if state is not None:
        highest, in_force = state
        if rl.serial < highest:
            raise VerifierError(
                Reason.REVOCATION_LIST_ROLLBACK,
                f"serial {rl.serial} is lower than the highest seen ({highest})",
            )
        if rl.serial == highest:
            if data != in_force:
                raise VerifierError(
                    Reason.REVOCATION_LIST_ROLLBACK,
                    f"serial {rl.serial} already installed with different content",
                )
            if unchecked is not None:
                store.get_revocation_state()  # the list in force must not lag the mark
            return rl
    # The store re-checks the serial inside its own transaction (racing installers).
    store.set_revocation_state(rl.serial, data)
    store.audit(
        "revocation_list_installed",
        issuer=rl.issuer,
        serial=rl.serial,
        entries=len(rl.entries),
        next_update=rl.next_update,
    )
    return rl


def check_not_revoked(
    store: Store,
    issuer_key: nacl.signing.VerifyKey,
    *,
    credential_id: bytes,
    device_id: bytes | None,
    model_id: str | None,
    sdk_version: str | None = None,
    now: float | None = None,
    required: bool = True,
) -> None:
    """Fail closed unless the list in force is present, verifies, is fresh, and names none of
    the given identifiers. Raises ``REVOKED``, ``REVOCATION_LIST_STALE``,
    ``REVOCATION_LIST_MISSING`` (only when ``required``), ``REVOCATION_LIST_ROLLBACK`` (the
    stored list is not the highest serial seen) or a parse error for a tampered store.
    """
    if not isinstance(issuer_key, nacl.signing.VerifyKey):
        raise _bad("issuer_key must be a nacl.signing.VerifyKey")
    if not isinstance(credential_id, bytes | bytearray | memoryview):
        raise _bad("credential_id must be bytes")
    if device_id is not None and not isinstance(device_id, bytes | bytearray | memoryview):
        raise _bad("device_id must be bytes or None")
    if model_id is not None and not isinstance(model_id, str):
        raise _bad("model_id must be a str or None")
    if sdk_version is not None and not isinstance(sdk_version, str):
        raise _bad("sdk_version must be a str or None")
    current_time = _now(now)
    state = store.get_revocation_state()
    if state is None:
        if required:
            raise VerifierError(Reason.REVOCATION_LIST_MISSING, "no revocation list installed")
        return
    highest, data = state
    rl, index = _parse_cached(bytes(data), bytes(issuer_key))
    if rl.serial != highest:
        raise VerifierError(
            Reason.REVOCATION_LIST_ROLLBACK, "stored list is not the highest serial seen"
        )
    if current_time > rl.next_update:
        raise VerifierError(
            Reason.REVOCATION_LIST_STALE,
            f"revocation list serial {rl.serial} is past its next_update; fetch a newer one",
        )
    wanted: dict[EntryKind, bytes | str] = {EntryKind.CREDENTIAL_ID: bytes(credential_id)}
    if device_id is not None:
        wanted[EntryKind.DEVICE_KEY] = bytes(device_id)
    if model_id is not None:
        wanted[EntryKind.MODEL_ID] = model_id
    if sdk_version is not None:
        wanted[EntryKind.SDK_VERSION] = sdk_version
    # The first matching entry in list order is reported, as a scan of the list would.
    hits = [index[pair] for pair in wanted.items() if pair in index]
    if hits:
        entry = rl.entries[min(hits)]
        raise VerifierError(
            Reason.REVOKED,
            f"{entry.kind.value} revoked ({entry.reason.value}) in list serial {rl.serial}",
        )
