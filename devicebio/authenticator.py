"""One object for the whole ceremony: enrol, authenticate by face, fall back, sign.

    auth = Authenticator(vault)
    auth.enroll("alice", open_source("camera"), consent=Consent("sign-in to Bank", 365))
    send(auth.register_with_pin(pin, user_name="alice", rp_id="bank.example",
                                origin="https://bank.example", challenge=rp_challenge).to_json())
    result = auth.authenticate("alice", open_source("camera"),
                               rp_id="bank.example", origin="https://bank.example",
                               challenge=challenge_from_the_rp)
    if result.assertion: send(result.assertion.to_json())      # only the signed decision leaves
    else: show(result.outcome.message); offer(result.fallbacks)  # PIN, recovery code, key

Templates are stored only protected by a per-enrolment secret transform (see
:mod:`devicebio.protect`), sealed in the vault, with the consent record that allowed them and a
retention expiry after which they are deleted. Face failures go through the SP 800-63B
attempt limiter; a successful fallback clears it.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from devicebio import decision
from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import AttemptLimiter, AttemptPolicy, Fallback, Pin, RecoveryCodes
from devicebio.fallback.security_key import SecurityKeyFallback
from devicebio.hazmat.credentials import Credentials, UserVerification
from devicebio.liveness.results import LivenessFailure
from devicebio.outcome import Outcome, OutcomeCode
from devicebio.protect import TemplateKey
from devicebio.protocol import LivenessClaim, Method, PaymentDetails, PromptStep
from devicebio.signed import Assertion, CredentialInfo, Registration
from devicebio.sources import Frame, FrameSource
from devicebio.store.records import Kind, check_consent, check_face
from devicebio.store.vault import Vault

if TYPE_CHECKING:
    from devicebio.liveness import ActiveLiveness

# record kinds (all of them are listed in devicebio.store.records)
FACE, FACE_KEY, CONSENT = Kind.FACE, Kind.FACE_KEY, Kind.CONSENT
FALLBACKS = tuple(Fallback)
_DAY = 86_400.0


@dataclass(frozen=True)
class Consent:
    """What the user agreed to: why their face is used and how long templates are kept."""

    purpose: str
    retention_days: int

    def __post_init__(self) -> None:
        if not self.purpose.strip():
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "consent needs a purpose")
        if not 1 <= self.retention_days <= 3650:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "retention_days must be 1..3650")


@dataclass(frozen=True)
class AuthPolicy:
    """Decision settings. ``operating_point``: a named threshold of the face model, measured
    as its spec records (None: the model's default; ``devicebio.vision.models`` lists them,
    docs/evaluation.md gives their FMR/FNMR). ``threshold``: a custom one instead. The face
    is accepted when the fused distance is below it (LOWER is STRICTER); see
    :mod:`devicebio.decision`."""

    threshold: float | None = None
    operating_point: str | None = None
    enrol_templates: int = 3
    enrol_max_frames: int = 90
    fuse_frames: int = 3
    timeout_s: float = 10.0
    attempts: AttemptPolicy = field(default_factory=AttemptPolicy)

    def __post_init__(self) -> None:
        self.decision_policy()  # an unknown operating point or a bad threshold fails here

    def decision_policy(self) -> decision.Policy:
        return decision.Policy.of(threshold=self.threshold, operating_point=self.operating_point)


@dataclass(frozen=True)
class EnrollmentResult:
    outcome: Outcome | None  # None when enrolled; else what to fix
    templates: int
    frames_seen: int
    rejected: dict[str, int]
    expires_at: float | None

    @property
    def ok(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True)
class AuthResult:
    outcome: Outcome
    assertion: Assertion | None
    frames_seen: int
    fallbacks: tuple[Fallback, ...] = ()

    @property
    def ok(self) -> bool:
        return self.assertion is not None


@dataclass(frozen=True)
class EnrolledUser:
    user: str
    templates: int
    model: str
    enrolled_at: float
    expires_at: float
    purpose: str


class Authenticator:
    """Face enrolment and authentication over a vault; see the module docstring."""

    def __init__(
        self,
        vault: Vault,
        *,
        pipeline: Any = None,
        policy: AuthPolicy | None = None,
        clock: Callable[[], float] = time.time,
        on_frame: Callable[[Outcome | None], None] | None = None,
        liveness: ActiveLiveness | None = None,
        on_prompt: Callable[[PromptStep], None] | None = None,
    ) -> None:
        """``liveness``: run this challenge-bound active liveness check over the frames before
        matching (its sampled embeddings are the match's probes; its claim is signed into the
        assertion). ``on_prompt`` shows each liveness prompt in the app's UI when it is due."""
        self.vault = vault
        self.policy = policy or AuthPolicy()
        self._pipeline = pipeline
        self._clock = clock
        self._on_frame = on_frame
        self.liveness = liveness
        self._on_prompt = on_prompt
        if liveness is not None and pipeline is None:
            # its embeddings are the match's probes: they must come from the same models
            self._pipeline = liveness.pipeline
        # Private: Credentials signs whatever verification it is told (hazmat); this object
        # only ever tells it what it verified itself.
        self._credentials = Credentials(vault)
        # With presentation-attack detection on, SP 800-63B allows more consecutive failures.
        self.limiter = AttemptLimiter(
            vault, self.policy.attempts, liveness=liveness is not None, clock=clock
        )
        # One instance: it holds the lock that serialises the key's counter updates.
        self.security_keys = SecurityKeyFallback(vault, clock=clock)

    @property
    def pipeline(self) -> Any:
        if self._pipeline is None:
            from devicebio.vision.pipeline import FacePipeline

            self._pipeline = FacePipeline()
        return self._pipeline

    @property
    def decision_policy(self) -> decision.Policy:
        """The face decision's policy (threshold and the operating point it came from)."""
        return self.policy.decision_policy()

    # ---- enrolment -----------------------------------------------------------------------

    def enroll(self, user: str, source: FrameSource, *, consent: Consent) -> EnrollmentResult:
        """Capture quality-gated frames and store protected templates (replacing old ones)."""
        rid = _check_user(user)
        captures, seen, rejected = self._capture(
            source.frames(), want=self.policy.enrol_templates, limit=self.policy.enrol_max_frames
        )
        if len(captures) < self.policy.enrol_templates:
            return EnrollmentResult(_worst(rejected, seen), len(captures), seen, rejected, None)
        embeddings = np.stack([c.embedding for c in captures]).astype(np.float32)
        # Every enrolment frame must show the same person: a swap during capture is refused.
        # (The outcome carries no distance: a score never leaves the decision.)
        if not decision.consistent(embeddings, self.decision_policy):
            rejected[OutcomeCode.SEVERAL_FACES.value] = rejected.get("several_faces", 0) + 1
            return EnrollmentResult(Outcome(OutcomeCode.SEVERAL_FACES), 0, seen, rejected, None)
        now = self._clock()
        expires = now + consent.retention_days * _DAY
        key = TemplateKey.new()
        self.limiter.start()
        # The key is written first: a template never exists without the key that reads it.
        self.vault.put(FACE_KEY, rid, key.to_record())
        self.vault.put(
            CONSENT,
            rid,
            {"purpose": consent.purpose, "retention_days": consent.retention_days, "at": now},
        )
        self._put_templates(user, key.protect(embeddings), now, expires)
        return EnrollmentResult(None, len(embeddings), seen, rejected, expires)

    def _put_templates(self, user: str, protected: np.ndarray, at: float, expires: float) -> None:
        self.vault.put(
            FACE,
            _check_user(user),
            {
                "user": user,
                "model": self.pipeline.model_id,
                "templates": [np.asarray(t, "<f4").tobytes() for t in protected],
                "enrolled_at": at,
                "expires_at": expires,
            },
        )

    # ---- authentication ------------------------------------------------------------------

    def authenticate(
        self, user: str, source: FrameSource, *, rp_id: str, origin: str, challenge: bytes
    ) -> AuthResult:
        """Capture until a decision or the timeout; on a match, sign an assertion for the RP."""
        verified = self._verify_face(user, source, challenge, rp_id=rp_id)
        if isinstance(verified, AuthResult):
            return verified
        verification, seen = verified
        assertion = self._credentials.authenticate(
            rp_id=rp_id, origin=origin, challenge=challenge, verification=verification, user=user
        )
        return AuthResult(Outcome(OutcomeCode.MATCHED), assertion, seen)

    def verify_face(self, user: str, source: FrameSource) -> AuthResult:
        """One face attempt that signs nothing (``devicebio test --user``): counted against
        the attempt limits like any other, answered only by its outcome, never a score. No
        liveness check runs (there is no challenge to bind it to)."""
        verified = self._verify_face(user, source, None)
        if isinstance(verified, AuthResult):
            return verified
        return AuthResult(Outcome(OutcomeCode.MATCHED), None, verified[1])

    def authorize_payment(
        self,
        user: str,
        source: FrameSource,
        *,
        rp_id: str,
        origin: str,
        challenge: bytes,
        payment: PaymentDetails,
        on_transaction: Callable[[PaymentDetails], bool],
    ) -> AuthResult:
        """Approve ``payment`` by face (Secure Payment Confirmation shape).

        ``on_transaction`` shows the transaction in the app's UI *before* any frame is
        captured and returns True only if the user confirms it (anything else: declined,
        ``USER_DECLINED``, no capture, nothing signed). On a match the assertion's
        clientDataJSON has type ``payment.get`` and carries exactly the ``payment`` shown.
        A failure offers the same fallbacks as :meth:`authenticate`; use
        :meth:`authorize_payment_with_pin` (or the other fallback verbs) then.
        """
        self._show(payment, rp_id, on_transaction)
        verified = self._verify_face(user, source, challenge, rp_id=rp_id)
        if isinstance(verified, AuthResult):
            return verified
        verification, seen = verified
        assertion = self._credentials.authenticate(
            rp_id=rp_id,
            origin=origin,
            challenge=challenge,
            verification=verification,
            payment=payment,
            user=user,
        )
        return AuthResult(Outcome(OutcomeCode.MATCHED), assertion, seen)

    def authorize_payment_with_pin(
        self,
        pin: str,
        *,
        rp_id: str,
        origin: str,
        challenge: bytes,
        payment: PaymentDetails,
        on_transaction: Callable[[PaymentDetails], bool],
    ) -> Assertion:
        """Approve ``payment`` with the PIN: shown first, then the PIN, then signed (a
        merchant's policy decides which amounts a PIN may approve)."""
        return self._authorize_with(
            Fallback.PIN, pin, rp_id, origin, challenge, payment, on_transaction
        )

    def authorize_payment_with_security_key(
        self,
        key: Any,
        *,
        rp_id: str,
        origin: str,
        challenge: bytes,
        payment: PaymentDetails,
        on_transaction: Callable[[PaymentDetails], bool],
    ) -> Assertion:
        """Approve ``payment`` with an enrolled security key (the usual step-up)."""
        return self._authorize_with(
            Fallback.SECURITY_KEY, key, rp_id, origin, challenge, payment, on_transaction
        )

    def _authorize_with(
        self,
        fallback: Fallback,
        proof: Any,
        rp_id: str,
        origin: str,
        challenge: bytes,
        payment: PaymentDetails,
        on_transaction: Callable[[PaymentDetails], bool],
    ) -> Assertion:
        self._show(payment, rp_id, on_transaction)
        verification = self._verify_fallback(fallback, proof)
        return self._credentials.authenticate(
            rp_id=rp_id,
            origin=origin,
            challenge=challenge,
            verification=verification,
            payment=payment,
        )

    @staticmethod
    def _show(
        payment: PaymentDetails, rp_id: str, on_transaction: Callable[[PaymentDetails], bool]
    ) -> None:
        # Checked before the user is asked anything: what is shown must be signable as is.
        if not isinstance(payment, PaymentDetails):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "payment must be a PaymentDetails")
        if payment.rp_id != rp_id:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "payment.rpId must be rp_id")
        if not callable(on_transaction):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "on_transaction must be callable")
        if on_transaction(payment) is not True:
            raise DeviceBioError(Reason.USER_DECLINED, "the user did not confirm the payment")

    def _verify_face(
        self,
        user: str,
        source: FrameSource,
        challenge: bytes | None,
        *,
        rp_id: str | None = None,
    ) -> tuple[UserVerification, int] | AuthResult:
        """Face (+ liveness when configured and there is a challenge) for ``user``: the
        verification to sign and the frames seen, or the failed AuthResult. One decision path
        for sign-in, payment and ``verify_face``. ``rp_id``: the RP whose credential of
        ``user`` the face will release (it must exist before anything is captured)."""
        # Retention first: an expired enrolment is deleted whatever the lockout state.
        key, templates = self._templates(user)
        # A face verifies one enrolled user: it may release only that user's credential
        # (checked before any capture, and again when signing).
        if rp_id is not None and not any(
            c.rp_id == rp_id and c.user == user for c in self._credentials.list()
        ):
            raise DeviceBioError(
                Reason.CREDENTIAL_NOT_FOUND,
                "no credential for this user at this RP",
                hint="register one first (the PIN verifies registration)",
            )
        if not self.limiter.status().allowed:
            return AuthResult(Outcome(OutcomeCode.LOCKED_OUT), None, 0, FALLBACKS)
        claim = LivenessClaim.none()
        if self.liveness is not None and challenge is not None:
            # The same frames answer the prompts and give the probes, so the face that passed
            # liveness is the face that is matched (identity continuity covers the session).
            live = self.liveness.run(source.frames(), challenge, self._on_prompt)
            seen = live.frames
            if live.reason is LivenessFailure.NO_FACE:
                # nobody presented anything: advice, not a failed attempt
                return AuthResult(Outcome(OutcomeCode.NO_FACE), None, seen, FALLBACKS)
            if not live.passed or len(live.embeddings) == 0:
                after = self.limiter.record_failure()
                offer = FALLBACKS if not after.allowed else ()
                return AuthResult(Outcome(OutcomeCode.LIVENESS_FAILED), None, seen, offer)
            claim = live.claim()
            raw = np.asarray(live.embeddings, np.float32)
        else:
            captures, seen, rejected = self._capture(
                source.frames(), want=self.policy.fuse_frames, limit=None
            )
            if not captures:
                return AuthResult(_worst(rejected, seen), None, seen, FALLBACKS)
            raw = np.stack([c.embedding for c in captures])
        # Counted before it is compared, under the vault's lock: parallel attempts cannot all
        # slip past the limit (a success releases the reservation below).
        if not self.limiter.reserve().allowed:
            return AuthResult(Outcome(OutcomeCode.LOCKED_OUT), None, seen, FALLBACKS)
        probes = key.protect(raw)
        verdict = decision.decide(probes, templates, self.decision_policy)
        if verdict is not decision.Verdict.ACCEPT:
            offer = FALLBACKS if not self.limiter.status().allowed else ()
            return AuthResult(Outcome(OutcomeCode.NO_MATCH), None, seen, offer)
        self.limiter.record_face_success()
        verification = UserVerification(
            method=Method.FACE,
            liveness=claim,
            model=self.pipeline.model_id,
            verified=True,
        )
        return verification, seen

    def _capture(
        self, frames: Iterable[Frame], *, want: int, limit: int | None
    ) -> tuple[list[Any], int, dict[str, int]]:
        from devicebio.vision.pipeline import FaceCapture

        good: list[Any] = []
        rejected: Counter[str] = Counter()
        seen = 0
        start: float | None = None
        for frame in frames:
            start = frame.timestamp if start is None else start
            if frame.timestamp - start > self.policy.timeout_s:
                rejected[OutcomeCode.TIMEOUT.value] += 1
                break
            seen += 1
            result = self.pipeline.analyze(frame.rgb)
            if isinstance(result, FaceCapture):
                good.append(result)
                if self._on_frame:
                    self._on_frame(None)
                if len(good) >= want:
                    break
            else:
                rejected[result.code.value] += 1
                if self._on_frame:
                    self._on_frame(result)
            if limit is not None and seen >= limit:
                break
        return good, seen, dict(rejected)

    def _templates(self, user: str) -> tuple[TemplateKey, np.ndarray]:
        record = check_face(self._record(FACE, user))
        if record["expires_at"] <= self._clock():
            self.remove(user)
            raise DeviceBioError(
                Reason.NOT_ENROLLED,
                f"{user}'s enrolment passed its retention period and was deleted",
                hint="enrol again",
            )
        if record["model"] != self.pipeline.model_id:
            raise DeviceBioError(
                Reason.NOT_ENROLLED,
                f"{user} was enrolled with another face model",
                hint="enrol again",
            )
        try:
            templates = np.stack([np.frombuffer(t, "<f4") for t in record["templates"]])
        except (KeyError, TypeError, ValueError):
            raise DeviceBioError(Reason.RECORD_CORRUPT, "face template record") from None
        if templates.ndim != 2 or templates.shape[1] != 128:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "face template record")
        return TemplateKey.from_record(self._record(FACE_KEY, user)), templates

    def _record(self, kind: str, user: str, *, rid: str | None = None) -> dict[str, Any]:
        try:
            record = self.vault.get(kind, rid or _check_user(user))
        except DeviceBioError as exc:
            if exc.reason is Reason.RECORD_NOT_FOUND:
                raise DeviceBioError(
                    Reason.NOT_ENROLLED, f"{user} is not enrolled", hint="devicebio enroll"
                ) from None
            raise
        if not isinstance(record, dict):
            raise DeviceBioError(Reason.RECORD_CORRUPT, f"{kind} record")
        return record

    # ---- fallbacks -----------------------------------------------------------------------

    # Each verb checks its factor, clears the face lockout (a fallback that succeeds is what
    # SP 800-63B asks for after repeated face failures), then signs what it checked.

    def authenticate_with_pin(
        self, pin: str, *, rp_id: str, origin: str, challenge: bytes
    ) -> Assertion:
        """Sign an assertion after the PIN (PIN_WRONG, LOCKED_OUT once blocked)."""
        verification = self._verify_fallback(Fallback.PIN, pin)
        return self._sign(verification, rp_id, origin, challenge)

    def authenticate_with_recovery_code(
        self, code: str, *, rp_id: str, origin: str, challenge: bytes
    ) -> Assertion:
        """Sign an assertion after a one-time recovery code (which also unblocks the PIN)."""
        verification = self._verify_fallback(Fallback.RECOVERY, code)
        return self._sign(verification, rp_id, origin, challenge)

    def authenticate_with_security_key(
        self, key: Any, *, rp_id: str, origin: str, challenge: bytes
    ) -> Assertion:
        """``key``: a python-fido2 ``Fido2Client`` or ``CtapDevice`` for an enrolled key."""
        verification = self._verify_fallback(Fallback.SECURITY_KEY, key)
        return self._sign(verification, rp_id, origin, challenge)

    def register_with_pin(
        self,
        pin: str,
        *,
        user_name: str,
        rp_id: str,
        origin: str,
        challenge: bytes,
        user_handle: bytes | None = None,
    ) -> Registration:
        """Create (or replace) the credential for ``(rp_id, user_name)`` after the PIN. Only
        the face enrolled under the same name can release it (:meth:`authenticate`)."""
        verification = self._verify_fallback(Fallback.PIN, pin)
        return self._credentials.register(
            rp_id=rp_id,
            origin=origin,
            challenge=challenge,
            user_name=user_name,
            user_handle=user_handle,
            verification=verification,
        )

    def register_with_recovery_code(
        self,
        code: str,
        *,
        user_name: str,
        rp_id: str,
        origin: str,
        challenge: bytes,
        user_handle: bytes | None = None,
    ) -> Registration:
        """Create (or replace) the credential for ``(rp_id, user_name)`` after a recovery code."""
        verification = self._verify_fallback(Fallback.RECOVERY, code)
        return self._credentials.register(
            rp_id=rp_id,
            origin=origin,
            challenge=challenge,
            user_name=user_name,
            user_handle=user_handle,
            verification=verification,
        )

    def _verify_fallback(self, fallback: Fallback, proof: Any) -> UserVerification:
        if fallback is Fallback.PIN:
            Pin(self.vault).verify(proof)
        elif fallback is Fallback.RECOVERY:
            RecoveryCodes(self.vault).use(proof)
            Pin(self.vault).unblock()
        else:
            # self.security_keys: the one instance whose lock serialises the key's counter
            self.security_keys.verify(proof)
        self.limiter.record_fallback_success()
        return UserVerification(
            method=Method(fallback.value), liveness=LivenessClaim.none(), model=None, verified=True
        )

    def _sign(
        self, verification: UserVerification, rp_id: str, origin: str, challenge: bytes
    ) -> Assertion:
        return self._credentials.authenticate(
            rp_id=rp_id, origin=origin, challenge=challenge, verification=verification
        )

    # ---- credentials ---------------------------------------------------------------------

    def credentials(self) -> list[CredentialInfo]:
        """Every WebAuthn credential on this device (never key material)."""
        return self._credentials.list()

    def remove_credential(self, rp_id: str, user: str) -> None:
        """Delete the credential (and its key) for ``(rp_id, user)``."""
        self._credentials.remove(rp_id, user)

    # ---- lifecycle -----------------------------------------------------------------------

    def users(self) -> list[EnrolledUser]:
        out = []
        for rid in self.vault.ids(FACE):
            record = check_face(self._record(FACE, rid, rid=rid))
            has_consent = self.vault.exists(CONSENT, rid)
            consent = check_consent(self._record(CONSENT, rid, rid=rid)) if has_consent else None
            out.append(
                EnrolledUser(
                    user=record["user"],
                    templates=len(record["templates"]),
                    model=record["model"],
                    enrolled_at=float(record["enrolled_at"]),
                    expires_at=float(record["expires_at"]),
                    purpose=consent["purpose"] if consent else "",
                )
            )
        return out

    def renew(self, user: str) -> None:
        """Re-key the user's templates: copies stored under the old key no longer match."""
        old_key, templates = self._templates(user)
        record = check_face(self._record(FACE, user))
        new_key = TemplateKey.new()
        renewed = old_key.rekey_to(new_key, templates)
        self.vault.put(FACE_KEY, _check_user(user), new_key.to_record())
        self._put_templates(user, renewed, record["enrolled_at"], record["expires_at"])

    def remove(self, user: str) -> None:
        """Delete the user's templates, their key (crypto-shredding) and the consent record."""
        rid = _check_user(user)
        for kind in (FACE_KEY, FACE, CONSENT):
            self.vault.delete(kind, rid)

    def purge_expired(self) -> list[str]:
        now = self._clock()
        gone = [u.user for u in self.users() if u.expires_at <= now]
        for user in gone:
            self.remove(user)
        return gone


def _check_user(user: str) -> str:
    """The vault record id for ``user``: any name works, and none shows in the vault."""
    if not isinstance(user, str) or not user or len(user) > 128:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "user must be a name of 1..128 chars")
    return "u-" + hashlib.blake2b(user.encode(), digest_size=16).hexdigest()


def _worst(rejected: dict[str, int], seen: int) -> Outcome:
    """The most frequent quality problem, so the user gets one actionable message."""
    if not rejected:
        return Outcome(OutcomeCode.NO_FACE if seen else OutcomeCode.TIMEOUT)
    code = max(rejected.items(), key=lambda kv: kv[1])[0]
    return Outcome(OutcomeCode(code))
