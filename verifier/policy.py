"""What a relying party accepts, and what each way of verifying a user is worth to it.

The device *states* how it verified the user (the signed ``devicebio`` extension: method,
liveness, model); the RP's :class:`Policy` decides whether that is acceptable and which
:class:`Assurance` class it earns. The device's own assurance claim is never used for a
decision.

Defaults (change them per RP, per transaction type)::

    method          liveness passed   assurance
    face            yes               strong
    face            no                moderate     (refused when require_liveness)
    security-key    -                 strong
    pin             -                 weaker
    recovery        -                 recovery     -> re-enrol the user's face / keys
    (UV flag unset, allowed only with require_user_verification=False)  none

Stricter is: fewer ``accepted_methods``, ``require_liveness=True``, lower assurance values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from devicebio.protocol import LivenessClaim, Method

from .errors import Reason, VerifierError

__all__ = ["Assurance", "Method", "Policy"]

_ASSURANCE_FIELDS = (
    "face_with_liveness",
    "face_without_liveness",
    "pin",
    "security_key",
    "recovery",
)


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
    - ``require_liveness``: a face verification must carry a *passed* liveness claim
      (``POLICY_LIVENESS_REQUIRED``). PIN, security key and recovery have no liveness and are
      not affected; remove them from ``accepted_methods`` to refuse them.
    - ``face_with_liveness`` ... ``recovery``: the assurance each case earns.
    """

    accepted_methods: frozenset[Method] = frozenset(Method)
    require_user_verification: bool = True
    require_liveness: bool = False
    face_with_liveness: Assurance = Assurance.STRONG
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
        for name in _ASSURANCE_FIELDS:
            try:
                object.__setattr__(self, name, Assurance(getattr(self, name)))
            except ValueError:
                raise VerifierError(Reason.MALFORMED, f"{name} is not an Assurance") from None

    def assurance_for(self, method: Method, liveness: LivenessClaim) -> Assurance:
        """The assurance this policy grants to ``method`` with ``liveness`` (no acceptance
        check; see :meth:`check`)."""
        if method is Method.FACE:
            return self.face_with_liveness if liveness.passed else self.face_without_liveness
        if method is Method.PIN:
            return self.pin
        if method is Method.SECURITY_KEY:
            return self.security_key
        return self.recovery

    def check(self, method: Method, liveness: LivenessClaim) -> Assurance:
        """Refuse what this policy does not accept; return the assurance of what it does."""
        if method not in self.accepted_methods:
            raise VerifierError(
                Reason.POLICY_METHOD_REFUSED, f"method {method.value!r} is not accepted"
            )
        if self.require_liveness and method is Method.FACE and not liveness.passed:
            raise VerifierError(
                Reason.POLICY_LIVENESS_REQUIRED, "face verification without passed liveness"
            )
        return self.assurance_for(method, liveness)
