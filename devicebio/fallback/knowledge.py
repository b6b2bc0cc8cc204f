"""Knowledge-factor fallbacks: a PIN and one-time recovery codes, both kept in the vault.

The failure counter is written *before* a guess is checked, so killing the process during a
check cannot buy extra guesses. Secrets are compared only as Argon2id/BLAKE2b outputs with a
constant-time comparison.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import nacl.pwhash
import nacl.utils

from devicebio.errors import DeviceBioError, Reason
from devicebio.hazmat.seal import SALT_SIZE, argon2id_key, subkey
from devicebio.store import records
from devicebio.store.records import PinBody
from devicebio.store.vault import Vault

PIN_MIN_LENGTH = 6
PIN_MAX_LENGTH = 64
DEFAULT_PIN_TRIES = 5
RECOVERY_CODE_COUNT = 10
_RECOVERY_GROUPS = 4  # 4 groups of 5 base32 characters = 100 bits


@dataclass(frozen=True)
class PinStatus:
    is_set: bool
    failures: int
    remaining: int
    blocked: bool


class Pin:
    """A device PIN with a retry counter; after ``max_failures`` wrong PINs it is blocked until a
    recovery code resets it (as a smart card's PUK does)."""

    KIND, ID = records.Kind.KNOWLEDGE, records.PIN_ID

    def __init__(
        self,
        vault: Vault,
        *,
        max_failures: int = DEFAULT_PIN_TRIES,
        opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ) -> None:
        if max_failures < 1:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "max_failures must be at least 1")
        if not records.argon2_cost_ok(opslimit, memlimit):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "Argon2id cost out of range")
        self._vault = vault
        self._max = max_failures
        self._ops, self._mem = opslimit, memlimit

    def set(self, pin: str) -> None:
        _check_pin_policy(pin)
        salt = nacl.utils.random(SALT_SIZE)
        digest = argon2id_key(_pin_bytes(pin), salt, self._ops, self._mem)
        record: PinBody = {
            "salt": salt,
            "ops": self._ops,
            "mem": self._mem,
            "hash": digest,
            "failures": 0,
        }
        self._vault.put(self.KIND, self.ID, record)

    def status(self) -> PinStatus:
        if not self._vault.exists(self.KIND, self.ID):
            return PinStatus(False, 0, 0, False)
        failures = int(self._record()["failures"])
        return PinStatus(True, failures, max(self._max - failures, 0), failures >= self._max)

    def verify(self, pin: str) -> None:
        """Return if ``pin`` is right; else raise PIN_WRONG, or LOCKED_OUT once blocked."""
        # A PIN that cannot be encoded can never be right (set() refuses it): refuse it as
        # input, before anything is counted or hashed.
        secret = _pin_bytes(pin)
        # Count the attempt first, under the vault's lock: a crash during the slow hash must
        # not refund it, and two processes guessing at once must each be counted.
        with self._vault.exclusive():
            record = self._record()
            if record["failures"] >= self._max:
                raise DeviceBioError(
                    Reason.LOCKED_OUT,
                    "the PIN is blocked after too many wrong entries",
                    hint="use a recovery code ('devicebio authenticate --method recovery')",
                )
            record["failures"] += 1
            self._vault.put(self.KIND, self.ID, record)
        guess = argon2id_key(secret, record["salt"], record["ops"], record["mem"])
        if not hmac.compare_digest(guess, record["hash"]):
            left = self._max - record["failures"]
            raise DeviceBioError(Reason.PIN_WRONG, f"wrong PIN, {left} tries left")
        self.unblock()

    def unblock(self) -> None:
        """Reset the retry counter (after a recovery code was accepted)."""
        with self._vault.exclusive():
            if self._vault.exists(self.KIND, self.ID):
                record = self._record()
                record["failures"] = 0
                self._vault.put(self.KIND, self.ID, record)

    def _record(self) -> PinBody:
        try:
            record = self._vault.get(self.KIND, self.ID)
        except DeviceBioError as exc:
            if exc.reason is Reason.RECORD_NOT_FOUND:
                raise DeviceBioError(
                    Reason.PIN_NOT_SET, "no PIN is set", hint="devicebio pin set"
                ) from None
            raise
        return records.check_pin(record)


def _pin_bytes(pin: object) -> bytes:
    if not isinstance(pin, str) or len(pin) > PIN_MAX_LENGTH:
        raise DeviceBioError(
            Reason.PIN_POLICY, f"a PIN is text of at most {PIN_MAX_LENGTH} characters"
        )
    try:
        return pin.encode("utf-8")
    except UnicodeEncodeError:
        raise DeviceBioError(Reason.PIN_POLICY, "a PIN must be valid Unicode text") from None


def _check_pin_policy(pin: str) -> None:
    if not isinstance(pin, str) or not (PIN_MIN_LENGTH <= len(pin) <= PIN_MAX_LENGTH):
        raise DeviceBioError(
            Reason.PIN_POLICY, f"a PIN has {PIN_MIN_LENGTH} to {PIN_MAX_LENGTH} characters"
        )
    if len(set(pin)) == 1 or pin in "0123456789012345678909876543210":
        raise DeviceBioError(Reason.PIN_POLICY, "a PIN may not be a repeated or sequential run")


class RecoveryCodes:
    """Ten single-use codes of 100 bits each, stored only as keyed hashes.

    High-entropy codes do not need a slow hash; the key (derived from the vault's device
    secret) keeps an attacker holding only the files from testing guesses offline.
    """

    KIND, ID = records.Kind.KNOWLEDGE, records.RECOVERY_ID

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def new(self, count: int = RECOVERY_CODE_COUNT) -> list[str]:
        """Replace all codes with ``count`` fresh ones; show them to the user once."""
        if not 1 <= count <= 100:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "count must be 1..100")
        codes = [_new_code() for _ in range(count)]
        self._vault.put(self.KIND, self.ID, {"unused": sorted(self._hash(c) for c in codes)})
        return codes

    def remaining(self) -> int:
        if not self._vault.exists(self.KIND, self.ID):
            return 0
        return len(self._unused())

    def use(self, code: str) -> None:
        """Consume ``code`` or raise RECOVERY_CODE_WRONG. A code works once."""
        digest = self._hash(code)
        with self._vault.exclusive():  # two processes must not both spend one code
            unused = self._unused() if self._vault.exists(self.KIND, self.ID) else []
            match = [h for h in unused if hmac.compare_digest(h, digest)]
            if not match:
                raise DeviceBioError(Reason.RECOVERY_CODE_WRONG, "that recovery code is not valid")
            self._vault.put(self.KIND, self.ID, {"unused": [h for h in unused if h != match[0]]})

    def _unused(self) -> list[bytes]:
        return records.check_recovery(self._vault.get(self.KIND, self.ID))["unused"]

    def _hash(self, code: str) -> bytes:
        normalised = "".join(ch for ch in str(code).upper() if ch.isalnum())
        key = subkey(self._vault.device_secret, b"recovery-code")
        return hashlib.blake2b(normalised.encode(), key=key, digest_size=32).digest()


def _new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(15)).decode()[: 5 * _RECOVERY_GROUPS]
    return "-".join(raw[i : i + 5] for i in range(0, len(raw), 5))
