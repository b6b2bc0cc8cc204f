"""Expected results of a face attempt are values, not exceptions.

A user can act on every :class:`Outcome`: move closer, add light, hold still, face the camera.
``measured`` and ``limit`` say how far off the capture was, in the unit of the check (pixels,
grey levels, degrees, a sharpness score); they are quality measures, never a match score.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Outcome:
    code: OutcomeCode
    measured: float | None = None
    limit: float | None = None

    @property
    def ok(self) -> bool:
        return self.code is OutcomeCode.MATCHED

    @property
    def message(self) -> str:
        text = ADVICE[self.code]
        if self.measured is not None and self.limit is not None:
            text += f" (measured {self.measured:.1f}, limit {self.limit:.1f})"
        return text
