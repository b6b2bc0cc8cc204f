"""What a relying party accepts, and what each way of verifying a user is worth to it.

The device *states* how it verified the user (the signed ``devicebio`` extension: method,
liveness, model); the RP's :class:`Policy` decides whether that is acceptable and which
:class:`Assurance` class it earns. The device's own assurance claim is never used for a
decision.

Defaults (change them per RP, per transaction type)::

    method          liveness passed   assurance
    face            yes               moderate     per kind: no kind is strong by default
    face            no                moderate     (refused when require_liveness)
    security-key    -                 strong
    pin             -                 weaker
    recovery        -                 recovery     -> re-enrol the user's face / keys
    (UV flag unset, allowed only with require_user_verification=False)  none

A liveness kind is graded STRONG by default only once its measured attack acceptance against
screen replays meets the targets (steered screen replay IAPMR <= 7%, plain screen replay
APCER <= 1%, each on real recaptures; docs/evaluation.md). Neither kind does today: RGB
prompts alone are beaten by a steered screen replay, and the passive PAD's real-recapture
evidence is 5 attack items (an anecdote). An RP that accepts that evidence opts in, e.g.
``Policy(face_with_liveness={"active-challenge-minifasnet": Assurance.STRONG})``.

Stricter is: fewer ``accepted_methods``, ``require_liveness=True``, lower assurance values,
a ``known_models`` set.

Claims are self-asserted by the device (there is no hardware attestation), so the policy
trusts them no further than it can check them, whatever the policy's settings:

- only liveness kinds this verifier knows count as liveness (an unknown kind, even
  "passed", earns ``face_without_liveness``);
- a passed challenge-bound claim must carry the sequence hash recomputed from THIS
  challenge (else ``LIVENESS_MISMATCH``) and have examined at least the frames the plan
  needs (``protocol.minimum_frames``; else ``LIVENESS_IMPLAUSIBLE``);
- a face verification must name its model and SDK version, each in canonical form
  (lowercase, no spaces), so that revocation by model or version cannot be dodged by
  leaving them out or re-spelling them (``EXTENSION_INVALID``).
"""

from __future__ import annotations

import enum
import functools
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devicebio.protocol import (
    CHALLENGE_BOUND_KINDS,
    LIVENESS_KIND,
    LIVENESS_KIND_PASSIVE,
    DevicebioExtension,
    LivenessClaim,
    Method,
    ProtocolError,
    liveness_expectation,
)

from .errors import Reason, VerifierError, from_protocol

__all__ = ["Assurance", "Method", "Policy"]

_ASSURANCE_FIELDS = (
    "face_with_liveness",
    "face_without_liveness",
    "pin",
    "security_key",
    "recovery",
)

#: Liveness kinds whose claims this verifier can check against the challenge.
KNOWN_LIVENESS_KINDS = CHALLENGE_BOUND_KINDS
#: The default assurance per known kind (see the module doc for why neither is strong).
DEFAULT_LIVENESS_ASSURANCE = {
    LIVENESS_KIND: "moderate",  # steered screen replays beat it (issue 13: 42 of 100)
    LIVENESS_KIND_PASSIVE: "moderate",  # targets not shown on real recaptures yet
}
# Canonical spellings: revocation lists match model ids and SDK versions exactly.
_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9._:@+-]{0,127}")
_SDK_RE = re.compile(r"[0-9][0-9a-z.+-]{0,63}")
# Module-level names for the members checked at every sign-in: reading an enum member off
# its class costs about 0.2 us on CPython 3.11, a module global a tenth of that.
_FACE, _PIN, _SECURITY_KEY = Method.FACE, Method.PIN, Method.SECURITY_KEY


@functools.lru_cache(maxsize=512)
def _names_canonical(model: str, sdk: str) -> bool:
    # A device names the same model and SDK at every sign-in: one match per distinct pair
    # (bounded, so hostile values cannot grow it).
    return _MODEL_RE.fullmatch(model) is not None and _SDK_RE.fullmatch(sdk) is not None


class Assurance(enum.StrEnum):
    """How much an RP trusts one verification. ``RECOVERY`` means: let the user in only to
    re-enrol (new face template, new credential), not for ordinary business."""

    STRONG = "strong"
    MODERATE = "moderate"
    WEAKER = "weaker"
    RECOVERY = "recovery"
    #: The user was present but not verified (UV unset). Only ever granted when the policy
    #: has ``require_user_verification=False``.
    NONE = "none"


@dataclass(frozen=True)
class Policy:
    """A relying party's acceptance rules. Frozen and hashable; build one per use case.

    - ``accepted_methods``: methods that may verify the user at all
      (others -> ``POLICY_METHOD_REFUSED``).
    - ``require_user_verification``: the UV flag must be set (``USER_NOT_VERIFIED``). Turning
      it off only makes sense for a presence-only step-up; devicebio always sets UV when it
      verified the user.
    - ``require_liveness``: a face verification must carry a *passed* liveness claim of a
      known kind (``POLICY_LIVENESS_REQUIRED``). PIN, security key and recovery have no
      liveness and are not affected; remove them from ``accepted_methods`` to refuse them.
    - ``known_models``: when set, a face verification must name one of these model ids
      exactly (``EXTENSION_INVALID``).
    - ``face_with_liveness``: the assurance of a face verification with passed liveness,
      per liveness kind (a mapping kind -> Assurance; kinds left out keep their default), or
      one Assurance for every known kind.
    - ``face_without_liveness`` ... ``recovery``: the assurance each case earns.
    """

    accepted_methods: frozenset[Method] = frozenset(Method)
    require_user_verification: bool = True
    require_liveness: bool = False
    known_models: frozenset[str] | None = None
    face_with_liveness: Any = None  # normalised to a sorted tuple of (kind, Assurance)
    face_without_liveness: Assurance = Assurance.MODERATE
    pin: Assurance = Assurance.WEAKER
    security_key: Assurance = Assurance.STRONG
    recovery: Assurance = Assurance.RECOVERY

    def __post_init__(self) -> None:
        try:
            methods = frozenset(Method(m) for m in self.accepted_methods)
        except (TypeError, ValueError):
            raise VerifierError(
                Reason.MALFORMED, "accepted_methods holds an unknown method"
            ) from None
        object.__setattr__(self, "accepted_methods", methods)
        for name in ("require_user_verification", "require_liveness"):
            if type(getattr(self, name)) is not bool:
                raise VerifierError(Reason.MALFORMED, f"{name} must be a bool")
        if self.known_models is not None:
            if isinstance(self.known_models, str) or not all(
                isinstance(m, str) and _MODEL_RE.fullmatch(m) for m in self.known_models
            ):
                raise VerifierError(Reason.MALFORMED, "known_models must be canonical model ids")
            object.__setattr__(self, "known_models", frozenset(self.known_models))
        object.__setattr__(self, "face_with_liveness", _per_kind(self.face_with_liveness))
        for name in _ASSURANCE_FIELDS[1:]:
            try:
                object.__setattr__(self, name, Assurance(getattr(self, name)))
            except ValueError:
                raise VerifierError(Reason.MALFORMED, f"{name} is not an Assurance") from None

    def assurance_for(self, method: Method, liveness: LivenessClaim) -> Assurance:
        """The assurance this policy grants to ``method`` with ``liveness`` (no acceptance
        check; see :meth:`check`). Only a passed claim of a known kind counts as liveness."""
        if method is _FACE:
            if liveness.passed and liveness.kind in KNOWN_LIVENESS_KINDS:
                return self.liveness_assurance(liveness.kind)
            return self.face_without_liveness
        if method is _PIN:
            return self.pin
        if method is _SECURITY_KEY:
            return self.security_key
        return self.recovery

    def liveness_assurance(self, kind: str) -> Assurance:
        """The assurance a passed liveness claim of ``kind`` earns (a known kind)."""
        for known, assurance in self.face_with_liveness:
            if known == kind:
                return assurance
        raise KeyError(kind)

    def check(self, extension: DevicebioExtension, *, challenge: bytes) -> Assurance:
        """Refuse what this policy does not accept, and any claim that does not hold up for
        ``challenge``; return the assurance of what it does accept."""
        method, liveness = extension.method, extension.liveness
        if method not in self.accepted_methods:
            raise VerifierError(
                Reason.POLICY_METHOD_REFUSED, f"method {method.value!r} is not accepted"
            )
        if method is _FACE:
            self._check_face(extension, challenge)
        live = liveness.passed and liveness.kind in KNOWN_LIVENESS_KINDS
        if self.require_liveness and method is _FACE and not live:
            raise VerifierError(
                Reason.POLICY_LIVENESS_REQUIRED,
                f"face verification needs passed {LIVENESS_KIND!r} liveness",
            )
        return self.assurance_for(method, liveness)

    def _check_face(self, extension: DevicebioExtension, challenge: bytes) -> None:
        model, sdk = extension.model, extension.sdk_version
        if model is None or sdk is None or not _names_canonical(model, sdk):
            # Which of the two, for the refusal.
            if model is None or _MODEL_RE.fullmatch(model) is None:
                raise VerifierError(
                    Reason.EXTENSION_INVALID, "a face verification must name its model canonically"
                )
            raise VerifierError(
                Reason.EXTENSION_INVALID, "a face verification must name its SDK version"
            )
        if self.known_models is not None and model not in self.known_models:
            raise VerifierError(Reason.EXTENSION_INVALID, "the face model is not one this RP knows")
        claim = extension.liveness
        if not claim.passed or claim.kind not in CHALLENGE_BOUND_KINDS:
            return
        # A passed challenge-bound claim is checked whatever the policy: a wrong one is a
        # replayed or forged result, never merely "no liveness".
        try:
            expected, frames_needed = liveness_expectation(challenge)
        except ProtocolError as exc:
            raise from_protocol(exc) from None
        if claim.sequence_hash is None or not hmac.compare_digest(claim.sequence_hash, expected):
            raise VerifierError(
                Reason.LIVENESS_MISMATCH, "liveness was not performed for this challenge's prompts"
            )
        if claim.frames < frames_needed:
            raise VerifierError(
                Reason.LIVENESS_IMPLAUSIBLE, "too few frames examined for this challenge's prompts"
            )


def _per_kind(value: Any) -> tuple[tuple[str, Assurance], ...]:
    """``face_with_liveness`` as a hashable, sorted (kind, Assurance) tuple over every known
    kind: None = the defaults, one Assurance = that for every kind, a mapping = overrides."""
    chosen: dict[str, Any] = dict(DEFAULT_LIVENESS_ASSURANCE)
    if isinstance(value, str | Assurance):
        chosen = dict.fromkeys(chosen, value)
    elif isinstance(value, Mapping | tuple):
        value = dict(value)
        unknown = set(value) - set(chosen)
        if unknown:
            raise VerifierError(Reason.MALFORMED, "face_with_liveness names an unknown kind")
        chosen |= dict(value)
    elif value is not None:
        raise VerifierError(Reason.MALFORMED, "face_with_liveness is not an Assurance")
    try:
        return tuple(sorted((k, Assurance(v)) for k, v in chosen.items()))
    except ValueError:
        raise VerifierError(Reason.MALFORMED, "face_with_liveness is not an Assurance") from None
