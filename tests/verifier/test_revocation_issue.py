"""The one revocation publisher (verifier.revocation.issue.publish) on a real SQLite store:
duplicates are no-ops, a lost race is retried on top of the winner's list, the back-off is
the documented one. The CLI and the HTTP service drive it in test_revocation_publish_paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from verifier.errors import Reason, VerifierError
from verifier.revocation import (
    EntryKind,
    RevocationEntry,
    RevocationReason,
    check_not_revoked,
    parse_revocation_list,
    publish,
)
from verifier.revocation.issue import (
    RETRY,
    ListIssuer,
    RetryPolicy,
    entry_from_text,
)
from verifier.store import SQLiteStore

T0 = 1_700_000_000
DAY = 86_400
KEY = nacl.signing.SigningKey(b"\x44" * 32)
OTHER = nacl.signing.SigningKey(b"\x55" * 32)


def _entry(value: str, reason: RevocationReason = RevocationReason.REVOKED) -> RevocationEntry:
    return RevocationEntry(EntryKind.MODEL_ID, value, reason, T0)


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "v.db")
    yield s
    s.close()


def _clock(t: float = T0) -> Any:
    return lambda: t


def test_first_list_then_entries_carry_over(store: SQLiteStore) -> None:
    first = publish(store, KEY, clock=_clock(), validity=7 * DAY)
    assert first.changed and first.list.serial == 1 and first.list.entries == ()
    assert first.list.issuer == "verifier" and first.list.next_update == T0 + 7 * DAY
    a = publish(store, KEY, _entry("m-a"), clock=_clock(T0 + 1), issuer="rp.example")
    b = publish(store, KEY, _entry("m-b"), clock=_clock(T0 + 2))
    assert (a.list.serial, b.list.serial) == (2, 3)
    assert [e.value for e in b.list.entries] == ["m-a", "m-b"]
    assert b.list.issuer == "rp.example"  # None keeps the name of the list in force
    assert store.get_revocation_state() == (3, b.data)
    assert parse_revocation_list(b.data, KEY.verify_key) == b.list
    events = [e for _, e, _ in store.audit_events(10)]
    assert events.count("revoked") == 2 and events.count("revocation_list_published") == 1


def test_duplicate_entry_is_a_no_op(store: SQLiteStore) -> None:
    done = publish(store, KEY, _entry("m-a"), clock=_clock())
    state = store.get_revocation_state()
    again = publish(
        store, KEY, _entry("m-a", RevocationReason.USER_REQUESTED), clock=_clock(T0 + 5)
    )
    assert again.changed is False
    assert again.list == done.list and again.data == done.data  # the entry in force, as it was
    assert again.list.entries[0].reason is RevocationReason.REVOKED
    assert store.get_revocation_state() == state  # nothing signed, nothing installed
    assert [e for _, e, _ in store.audit_events(10)].count("revoked") == 1
    # A different value of the same kind is a new entry.
    assert publish(store, KEY, _entry("m-b"), clock=_clock(T0 + 6)).changed is True


class _Racer:
    """A second publisher that wins the race: just before our install reaches the store, it
    installs its own list (serial N+1) through the same real SQLite database."""

    def __init__(self, store: SQLiteStore, times: int) -> None:
        self.store = store
        self.times = times
        self._real = store.set_revocation_state
        self._racing = False

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        if self.times > 0 and not self._racing:
            self.times -= 1
            self._racing = True  # the racer's own install goes straight to the store
            try:
                publish(self.store, KEY, _entry(f"racer-{self.times}"), clock=_clock())
            finally:
                self._racing = False
        self._real(serial, data)


def test_lost_race_is_retried_on_top_of_the_winner(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(store, KEY, clock=_clock())
    racer = _Racer(store, times=2)
    monkeypatch.setattr(store, "set_revocation_state", racer.set_revocation_state)
    waits: list[float] = []
    done = publish(
        store,
        KEY,
        _entry("ours"),
        clock=_clock(T0 + 1),
        retry=RetryPolicy(attempts=3, step=0.01, jitter=0.0),
        sleep=waits.append,
    )
    assert done.changed and done.list.serial == 4
    assert sorted(str(e.value) for e in done.list.entries) == ["ours", "racer-0", "racer-1"]
    assert waits == [0.01, 0.02]  # step * (attempt + 1), no jitter asked for
    check_not_revoked(
        store, KEY.verify_key, credential_id=b"x", device_id=None, model_id=None, now=T0 + 1
    )


def test_race_lost_every_time_raises_rollback(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    racer = _Racer(store, times=5)
    monkeypatch.setattr(store, "set_revocation_state", racer.set_revocation_state)
    waits: list[float] = []
    with pytest.raises(VerifierError) as e:
        publish(
            store,
            KEY,
            _entry("ours"),
            clock=_clock(),
            retry=RetryPolicy(attempts=3, step=0.01, jitter=0.04),
            sleep=waits.append,
        )
    assert e.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    assert len(waits) == 2  # no wait after the last attempt
    assert 0.01 <= waits[0] < 0.05 and 0.02 <= waits[1] < 0.06  # step plus bounded jitter


def test_the_one_retry_policy() -> None:
    assert (RETRY.attempts, RETRY.step, RETRY.jitter) == (10, 0.01, 0.04)
    assert RETRY.delay(0, 0.0) == 0.01 and RETRY.delay(9, 0.5) == pytest.approx(0.12)


def test_refuses_to_carry_over_a_list_it_did_not_sign(store: SQLiteStore) -> None:
    publish(store, OTHER, _entry("theirs"), clock=_clock())
    with pytest.raises(VerifierError) as e:
        publish(store, KEY, _entry("ours"), clock=_clock())
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE


@pytest.mark.parametrize("validity", [0, -1, float("nan"), float("inf"), 3651 * DAY, True])
def test_bad_arguments(store: SQLiteStore, validity: Any) -> None:
    with pytest.raises(VerifierError) as e:
        publish(store, KEY, validity=validity, clock=_clock())
    assert e.value.reason is Reason.MALFORMED
    assert store.get_revocation_state() is None


def test_list_issuer_renews_at_half_validity(store: SQLiteStore) -> None:
    now = [float(T0)]
    issuer = ListIssuer(store, KEY, validity=2 * DAY, clock=lambda: now[0])
    issuer.ensure_fresh()
    issuer.ensure_fresh()
    assert store.get_revocation_state() is not None
    assert store.get_revocation_state()[0] == 1  # type: ignore[index]
    now[0] += DAY - 1
    issuer.ensure_fresh()
    assert store.get_revocation_state()[0] == 1  # type: ignore[index]
    now[0] += 2
    issuer.ensure_fresh()
    found = issuer.current()
    assert found is not None and found[0].serial == 2 and found[0].this_update == T0 + DAY + 1
    assert issuer.revoke(_entry("m")).changed and not issuer.revoke(_entry("m")).changed


def test_entry_from_text() -> None:
    e = entry_from_text("credential_id", "Y3JlZC0x", "User-Requested", revoked_at=T0)
    assert (e.kind, e.value, e.reason) == (
        EntryKind.CREDENTIAL_ID,
        b"cred-1",
        RevocationReason.USER_REQUESTED,
    )
    assert entry_from_text("credential_id", "Y3JlZC0x==", "revoked", revoked_at=T0).value == (
        b"cred-1"
    )
    assert entry_from_text("device_id", "00ff", "revoked", revoked_at=T0).value == b"\x00\xff"
    assert entry_from_text("sdk_version", "0.1", "revoked", revoked_at=T0).kind is (
        EntryKind.SDK_VERSION
    )
    for target, value, reason in (
        ("credential_id", "!!", "revoked"),
        ("credential_id", "Y3JlZC0y", "bored"),
        ("device_id", "zz", "revoked"),
        ("device_id", "", "revoked"),
        ("model_id", "m" * 257, "revoked"),
        ("user", "alice", "revoked"),
    ):
        with pytest.raises(VerifierError) as err:
            entry_from_text(target, value, reason, revoked_at=T0)
        assert err.value.reason is Reason.MALFORMED, (target, value, reason)
