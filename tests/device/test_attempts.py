"""The face attempt limiter (NIST SP 800-63B §5.2.2): delays, the hard cap, the periodic
knowledge factor, and state that survives a new object."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import AttemptLimiter, AttemptPolicy
from devicebio.store.vault import RawKey, Vault


@pytest.fixture()
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "v", RawKey(b"\x07" * 32))


def reason_of(fn, *args) -> Reason:
    with pytest.raises(DeviceBioError) as info:
        fn(*args)
    return info.value.reason


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_attempts_five_failures_then_doubling_delay(vault: Vault) -> None:
    clock = Clock()
    limiter = AttemptLimiter(vault, clock=clock)
    for _ in range(4):
        assert limiter.record_failure().allowed
    status = limiter.record_failure()
    assert (status.state, status.retry_after) == ("delayed", 30.0)
    assert reason_of(limiter.check) is Reason.LOCKED_OUT
    clock.now += 30
    limiter.check()
    assert limiter.record_failure().retry_after == 60.0
    clock.now += 60
    assert limiter.record_failure().retry_after == 120.0


def test_attempts_ten_with_liveness(vault: Vault) -> None:
    limiter = AttemptLimiter(vault, liveness=True, clock=Clock())
    for _ in range(9):
        assert limiter.record_failure().allowed
    assert not limiter.record_failure().allowed


def test_hard_cap_disables_face_until_fallback(vault: Vault) -> None:
    clock = Clock()
    limiter = AttemptLimiter(vault, AttemptPolicy(hard_cap=12, knowledge_every=None), clock=clock)
    for _ in range(12):
        clock.now += 10**6
        limiter.record_failure()
    clock.now += 10**9
    assert limiter.status().state == "disabled"
    assert reason_of(limiter.check) is Reason.LOCKED_OUT
    limiter.record_fallback_success()
    assert limiter.status().allowed


def test_face_success_resets_but_knowledge_is_due_periodically(vault: Vault) -> None:
    clock = Clock()
    limiter = AttemptLimiter(vault, clock=clock)
    limiter.record_failure()
    limiter.record_face_success()
    assert limiter.status().consecutive_failures == 0
    clock.now += 73 * 3600
    assert limiter.status().state == "knowledge_due"
    limiter.record_fallback_success()
    assert limiter.status().allowed


def test_state_persists_across_objects(vault: Vault) -> None:
    clock = Clock()
    for _ in range(5):
        AttemptLimiter(vault, clock=clock).record_failure()
    assert not AttemptLimiter(vault, clock=clock).status().allowed


def test_policy_refuses_short_delays() -> None:
    with pytest.raises(DeviceBioError):
        AttemptPolicy(base_delay=5)


def test_restoring_the_attempts_file_does_not_lift_a_lockout(vault: Vault) -> None:
    clock = Clock()
    limiter = AttemptLimiter(vault, clock=clock)
    limiter.start()
    saved = {p: p.read_bytes() for p in (vault.path / "attempts").iterdir()}
    for _ in range(5):
        limiter.record_failure()
    assert not limiter.status().allowed
    for path, blob in saved.items():
        path.write_bytes(blob)
    assert reason_of(limiter.status) is Reason.RECORD_ROLLED_BACK
