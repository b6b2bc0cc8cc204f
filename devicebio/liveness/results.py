"""What a liveness session returns, and the plug-in point for presentation-attack detectors."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from devicebio.protocol import LIVENESS_KIND, LIVENESS_KIND_PASSIVE, LivenessClaim, PromptStep
from devicebio.sources import Frame

__all__ = ["LivenessFailure", "LivenessResult", "PadVerdict", "PresentationAttackDetector"]


#: PassivePadDetector's name (kept here so the claim does not import the model runtime).
PASSIVE_PAD_NAME = "minifasnet"


class LivenessFailure(enum.StrEnum):
    """Why a session failed (the member's value is the stable, reportable text)."""

    NO_FACE = "no_face"  # nobody was in front of the camera: advice, not a failed attempt
    SEVERAL_FACES = "several_faces"
    FACE_LOST = "face_lost"
    BAD_TIMING = "bad_timing"  # frame timestamps no camera gives
    EARLY_RESPONSE = "early_response"  # a response before its prompt could have been seen
    WRONG_ORDER = "wrong_order"
    PROMPT_TIMEOUT = "prompt_timeout"
    INCOMPLETE = "incomplete"  # the frames ran out
    IDENTITY_CHANGED = "identity_changed"
    FLAT_SURFACE = "flat_surface"  # a turn moved like a plane (a photo or a screen)
    NO_MICRO_MOTION = "no_micro_motion"  # nothing ever moved (a static image)
    PAD_FAILED = "pad_failed"  # a plugged-in presentation-attack detector refused


@dataclass(frozen=True)
class PadVerdict:
    """One presentation-attack detector's verdict, reported as what it is."""

    name: str
    passed: bool
    kind: Literal["passive", "hardware"] = "passive"
    detail: str = ""


class PresentationAttackDetector(Protocol):
    """A pluggable PAD: a hardware IR/depth sensor or a passive model adds its verdict.

    ``faces`` holds, per frame, the tracked :class:`~devicebio.vision.types.Detection` or None.
    """

    name: str

    def assess(self, frames: Sequence[Frame], faces: Sequence[Any]) -> PadVerdict: ...


@dataclass(frozen=True)
class LivenessResult:
    """What a session showed. ``reason`` is None when passed, else the first failure."""

    passed: bool
    reason: LivenessFailure | None
    plan: tuple[PromptStep, ...]
    sequence_hash: bytes
    frames: int
    duration_s: float
    embeddings: np.ndarray = field(repr=False)  # (k, 128), memory only
    pad: tuple[PadVerdict, ...] = ()
    steps_done: int = 0

    def claim(self) -> LivenessClaim:
        """The signed statement for the ``devicebio`` extension. Its kind says which checks
        ran: the passive MiniFASNet pair's kind only when that detector gave a verdict."""
        passive = any(v.name == PASSIVE_PAD_NAME and v.kind == "passive" for v in self.pad)
        return LivenessClaim(
            kind=LIVENESS_KIND_PASSIVE if passive else LIVENESS_KIND,
            passed=self.passed,
            sequence_hash=self.sequence_hash,
            frames=min(self.frames, 100_000),
        )
