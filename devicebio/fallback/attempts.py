"""Face attempt limits (NIST SP 800-63B §5.2.2): after repeated face failures a delay, then the
face disabled until a fallback (PIN, recovery code, security key) succeeds.

The state is one vault record; deleting it while templates exist is treated as tampering (the
face stays disabled), since no key is needed to delete a file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from devicebio.errors import DeviceBioError, Reason
from devicebio.store import records
from devicebio.store.records import AttemptsBody
from devicebio.store.vault import Vault


@dataclass(frozen=True)
class AttemptPolicy:
    """How many face failures are tolerated, and what happens after.

    ``max_consecutive`` failures (5; SP 800-63B allows 10 when presentation-attack detection
    is on) start a delay of ``base_delay`` seconds (>= 30 s) that doubles with each further
    failure; after ``hard_cap`` consecutive failures the face is disabled until a PIN, recovery
    code or security key succeeds. ``knowledge_every`` forces a knowledge factor periodically
    (None disables that).
    """

    max_consecutive: int = 5
    max_consecutive_with_liveness: int = 10
    base_delay: float = 30.0
    hard_cap: int = 20
    knowledge_every: float | None = 72 * 3600.0

    def __post_init__(self) -> None:
        if self.base_delay < 30.0:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "SP 800-63B needs a delay >= 30 s")
        if not 1 <= self.max_consecutive <= self.max_consecutive_with_liveness <= self.hard_cap:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "attempt limits are inconsistent")


@dataclass(frozen=True)
class AttemptStatus:
    allowed: bool
    state: str  # "open" | "delayed" | "disabled" | "knowledge_due"
    consecutive_failures: int
    retry_after: float  # seconds until the next face attempt is allowed (0 when allowed)


class AttemptLimiter:
    """The persisted face-attempt state machine. Time is injectable for tests."""

    KIND, ID = records.Kind.ATTEMPTS, records.FACE_ATTEMPTS_ID

    def __init__(
        self,
        vault: Vault,
        policy: AttemptPolicy | None = None,
        *,
        liveness: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._vault = vault
        self.policy = policy or AttemptPolicy()
        self._limit = (
            self.policy.max_consecutive_with_liveness if liveness else self.policy.max_consecutive
        )
        self._clock = clock

    def status(self) -> AttemptStatus:
        state = self._state()
        now = self._clock()
        failures = state["failures"]
        if failures >= self.policy.hard_cap:
            return AttemptStatus(False, "disabled", failures, float("inf"))
        if state["not_before"] > now:
            return AttemptStatus(False, "delayed", failures, state["not_before"] - now)
        every = self.policy.knowledge_every
        if every is not None and now - state["last_knowledge"] > every:
            return AttemptStatus(False, "knowledge_due", failures, float("inf"))
        return AttemptStatus(True, "open", failures, 0.0)

    def check(self) -> None:
        """Raise LOCKED_OUT (with the wait in the message) unless a face attempt is allowed."""
        status = self.status()
        if status.allowed:
            return
        if status.state == "delayed":
            raise DeviceBioError(
                Reason.LOCKED_OUT,
                f"too many failed face attempts; retry in {status.retry_after:.0f} s",
                hint="or use the PIN, a recovery code or a security key",
            )
        raise DeviceBioError(
            Reason.LOCKED_OUT,
            "face unlock is disabled until a PIN, recovery code or security key succeeds"
            if status.state == "disabled"
            else "the PIN is due (periodic knowledge-factor check)",
            hint="devicebio authenticate --method pin",
        )

    def record_failure(self) -> AttemptStatus:
        with self._vault.exclusive():  # concurrent failures must all count
            state = self._state()
            state["failures"] += 1
            over = state["failures"] - self._limit
            if over >= 0:
                state["not_before"] = self._clock() + self.policy.base_delay * 2.0 ** min(over, 30)
            self._vault.put(self.KIND, self.ID, state)
        return self.status()

    def reserve(self) -> AttemptStatus:
        """Count a face attempt before its comparison runs, under the vault's lock; the
        returned status says whether it may run (``allowed``). A success releases it
        (:meth:`record_face_success`); a failure is already counted. Checking first and
        counting after the comparison would let parallel attempts all pass the check: each
        would be one more comparison than the limit allows."""
        with self._vault.exclusive():
            status = self.status()
            if not status.allowed:
                return status
            self.record_failure()
        return status

    def start(self) -> None:
        """Write the initial state if there is none (enrolment calls this)."""
        with self._vault.exclusive():
            if not self._vault.exists(self.KIND, self.ID):
                self._vault.put(self.KIND, self.ID, self._state())

    def record_face_success(self) -> None:
        with self._vault.exclusive():
            state = self._state()
            state["failures"], state["not_before"] = 0, 0.0
            self._vault.put(self.KIND, self.ID, state)

    def record_fallback_success(self) -> None:
        """A knowledge factor or security key succeeded: clear every face restriction."""
        self._vault.put(
            self.KIND, self.ID, {"failures": 0, "not_before": 0.0, "last_knowledge": self._clock()}
        )

    def _state(self) -> AttemptsBody:
        try:
            return self._read_state()
        except DeviceBioError as exc:
            if exc.reason is not Reason.RECORD_MISSING:
                raise
            # The file was deleted to wipe a lockout (no key is needed to delete): fail closed
            # into the state a fallback clears.
            return {"failures": self.policy.hard_cap, "not_before": 0.0, "last_knowledge": 0.0}

    def _read_state(self) -> AttemptsBody:
        if not self._vault.exists(self.KIND, self.ID):
            if self._vault.ids(records.Kind.FACE):
                # Enrolment writes this record, so templates without it mean someone deleted
                # the file to wipe a lockout (no key is needed to delete): fail closed.
                return {"failures": self.policy.hard_cap, "not_before": 0.0, "last_knowledge": 0.0}
            # A new device counts as freshly knowledge-verified: enrolment needs the PIN.
            return {"failures": 0, "not_before": 0.0, "last_knowledge": self._clock()}
        return records.check_attempts(self._vault.get(self.KIND, self.ID))
