"""Expected results of a face attempt are values, not exceptions.

A user can act on every :class:`Outcome`: move closer, add light, hold still, face the camera.
``measured`` and ``limit`` say how far off the capture was, in the unit of the check (pixels,
grey levels, degrees, a sharpness measure, a count of faces); they are quality measures, never
a match score. That is enforced: only a quality code may carry them, and SEVERAL_FACES only a
whole number of faces, so a face distance cannot reach a message, a log or JSON through an
Outcome (issue 10 #11: an enrolment refused for two people once printed their distance).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from devicebio.errors import DeviceBioError, Reason


class OutcomeCode(enum.StrEnum):
    MATCHED = "matched"
    NO_MATCH = "no_match"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    FACE_TOO_SMALL = "face_too_small"
    TOO_DARK = "too_dark"
    TOO_BRIGHT = "too_bright"
    TOO_BLURRY = "too_blurry"
    HEAD_TURNED = "head_turned"
    LIVENESS_FAILED = "liveness_failed"
    LOCKED_OUT = "locked_out"
    TIMEOUT = "timeout"


ADVICE: dict[OutcomeCode, str] = {
    OutcomeCode.MATCHED: "verified",
    OutcomeCode.NO_MATCH: "not recognised; try again or use your PIN",
    OutcomeCode.NO_FACE: "no face found: look at the camera",
    OutcomeCode.SEVERAL_FACES: "several faces: only the person signing in should be in view",
    OutcomeCode.FACE_TOO_SMALL: "face too small: move closer to the camera",
    OutcomeCode.TOO_DARK: "too dark: add light in front of you",
    OutcomeCode.TOO_BRIGHT: "over-exposed: move away from direct light",
    OutcomeCode.TOO_BLURRY: "too blurry: hold still, clean the lens",
    OutcomeCode.HEAD_TURNED: "head turned: face the camera",
    OutcomeCode.LIVENESS_FAILED: "liveness check failed: follow the prompts",
    OutcomeCode.LOCKED_OUT: "too many attempts: wait, or use your PIN",
    OutcomeCode.TIMEOUT: "no decision in time: try again",
}


# The codes of a quality gate, whose measurement the user can act on.
QUALITY = frozenset(
    {
        OutcomeCode.SEVERAL_FACES,
        OutcomeCode.FACE_TOO_SMALL,
        OutcomeCode.TOO_DARK,
        OutcomeCode.TOO_BRIGHT,
        OutcomeCode.TOO_BLURRY,
        OutcomeCode.HEAD_TURNED,
    }
)


@dataclass(frozen=True)
class Outcome:
    code: OutcomeCode
    measured: float | None = None
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.measured is None and self.limit is None:
            return
        if self.code not in QUALITY:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"a {self.code.value} outcome carries no measurement"
            )
        if self.code is OutcomeCode.SEVERAL_FACES and not (
            isinstance(self.measured, int | float)
            and float(self.measured).is_integer()
            and self.limit == 1
        ):
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, "several_faces carries a count of faces only"
            )

    @property
    def ok(self) -> bool:
        return self.code is OutcomeCode.MATCHED

    @property
    def message(self) -> str:
        text = ADVICE[self.code]
        if self.measured is not None and self.limit is not None:
            text += f" (measured {self.measured:.1f}, limit {self.limit:.1f})"
        return text
