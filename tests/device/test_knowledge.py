"""The knowledge factors: the PIN with its retry counter, and single-use recovery codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import Pin, RecoveryCodes
from devicebio.store.vault import RawKey, Vault

ARGON_FAST = {"opslimit": 2, "memlimit": 8 * 1024 * 1024}


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


# ---- issue 10: an attacker with file access but no key ------------------------------------


def test_deleting_the_pin_record_does_not_remove_the_pin(vault: Vault) -> None:
    """With the PIN file gone, 'no PIN set' would let a thief set their own PIN and enrol
    their face: once a PIN existed, its absence is an integrity error."""
    Pin(vault).set("480213")
    for path in (vault.path / "knowledge").iterdir():
        path.unlink()
    assert reason_of(Pin(vault).status) is Reason.RECORD_MISSING
    assert reason_of(Pin(vault).verify, "480213") is Reason.RECORD_MISSING


def test_restoring_the_pin_file_does_not_refund_guesses(vault: Vault) -> None:
    """The attack: save the PIN file, guess 4 times, put the file back, guess again."""
    pin = Pin(vault, **ARGON_FAST)
    pin.set("480213")
    saved = {p: p.read_bytes() for p in (vault.path / "knowledge").iterdir()}
    guesses = 0
    for _ in range(3):
        for _ in range(4):
            with pytest.raises(DeviceBioError) as info:
                pin.verify("000001")
            if info.value.reason is not Reason.PIN_WRONG:
                break
            guesses += 1
        for path, blob in saved.items():
            path.write_bytes(blob)
    assert guesses <= 4
    assert reason_of(pin.verify, "480213") is Reason.RECORD_ROLLED_BACK


@pytest.mark.parametrize("pin", ["48021\udcff3", "\ud800" * 6])
def test_a_pin_that_is_not_utf8_is_a_typed_error_and_not_counted(vault: Vault, pin: str) -> None:
    Pin(vault).set("480213")
    assert reason_of(Pin(vault).verify, pin) is Reason.PIN_POLICY
    assert reason_of(Pin(vault).set, pin) is Reason.PIN_POLICY
    assert Pin(vault).status().failures == 0


@pytest.mark.parametrize(
    "cost",
    [{"ops": 0}, {"mem": 1}, {"ops": 2**40}, {"mem": 2**50}, {"ops": True}, {"salt": b"s"}],
    ids=["ops-zero", "mem-tiny", "ops-huge", "mem-huge", "ops-bool", "salt-short"],
)
def test_an_out_of_range_argon2_cost_in_a_pin_record_is_a_typed_error(
    vault: Vault, cost: dict
) -> None:
    """A PIN record that authenticates but asks for no work, or for hours of it."""
    Pin(vault, **ARGON_FAST).set("480213")
    record = vault.get("knowledge", "pin")
    vault.put("knowledge", "pin", {**record, **cost})
    assert reason_of(Pin(vault).verify, "480213") is Reason.RECORD_CORRUPT
