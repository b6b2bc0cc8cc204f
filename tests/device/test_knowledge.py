"""The knowledge factors: the PIN with its retry counter, and single-use recovery codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import Pin, RecoveryCodes
from devicebio.store.vault import RawKey, Vault


@pytest.fixture()
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "v", RawKey(b"\x07" * 32))


def reason_of(fn, *args) -> Reason:
    with pytest.raises(DeviceBioError) as info:
        fn(*args)
    return info.value.reason


def test_pin_set_and_verify(vault: Vault) -> None:
    pin = Pin(vault)
    assert reason_of(pin.verify, "123987") is Reason.PIN_NOT_SET
    pin.set("480213")
    pin.verify("480213")
    assert pin.status().failures == 0
    assert b"480213" not in b"".join(p.read_bytes() for p in vault.path.rglob("*") if p.is_file())


@pytest.mark.parametrize("bad", ["12345", "111111", "123456", "654321", "x" * 65])
def test_pin_policy(vault: Vault, bad: str) -> None:
    assert reason_of(Pin(vault).set, bad) is Reason.PIN_POLICY


def test_pin_lockout_then_recovery_unblocks(vault: Vault) -> None:
    pin = Pin(vault, max_failures=3)
    pin.set("480213")
    for left in (2, 1, 0):
        assert reason_of(pin.verify, "000001") is Reason.PIN_WRONG
        assert pin.status().remaining == left
    assert reason_of(pin.verify, "480213") is Reason.LOCKED_OUT, "right PIN after block"
    codes = RecoveryCodes(vault).new()
    RecoveryCodes(vault).use(codes[0])
    pin.unblock()
    pin.verify("480213")


def test_pin_failure_counted_before_check(vault: Vault) -> None:
    pin = Pin(vault)
    pin.set("480213")
    with pytest.raises(DeviceBioError):
        pin.verify("999990")
    # A fresh object reads the persisted counter: the failure survived.
    assert Pin(vault).status().failures == 1


def test_recovery_codes_single_use(vault: Vault) -> None:
    rc = RecoveryCodes(vault)
    codes = rc.new()
    assert len(codes) == 10 and len(set(codes)) == 10
    rc.use(codes[3].lower().replace("-", " "))  # forgiving about case and separators
    assert rc.remaining() == 9
    assert reason_of(rc.use, codes[3]) is Reason.RECOVERY_CODE_WRONG
    assert reason_of(rc.use, "AAAAA-AAAAA-AAAAA-AAAAA") is Reason.RECOVERY_CODE_WRONG
    stored = b"".join(p.read_bytes() for p in vault.path.rglob("*") if p.is_file())
    assert codes[0].encode() not in stored
    rc.new()
    assert reason_of(rc.use, codes[0]) is Reason.RECOVERY_CODE_WRONG, "old codes survive renewal"
