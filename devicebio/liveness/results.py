"""What a liveness session returns, and the plug-in point for presentation-attack detectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from devicebio.protocol import LIVENESS_KIND, LivenessClaim, PromptStep
from devicebio.sources import Frame

__all__ = ["LivenessResult", "PadVerdict", "PresentationAttackDetector"]


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
    """What a session showed. ``reason`` is None when passed, else one of: "no_face",
    "several_faces", "face_lost", "bad_timing", "early_response", "wrong_order",
    "prompt_timeout", "incomplete" (the frames ran out), "identity_changed", "flat_surface",
    "no_micro_motion", "pad_failed"."""

    passed: bool
    reason: str | None
    plan: tuple[PromptStep, ...]
    sequence_hash: bytes
    frames: int
    duration_s: float
    embeddings: np.ndarray = field(repr=False)  # (k, 128), memory only
    pad: tuple[PadVerdict, ...] = ()
    steps_done: int = 0

    def claim(self) -> LivenessClaim:
        """The signed statement for the ``devicebio`` extension."""
        return LivenessClaim(
            kind=LIVENESS_KIND,
            passed=self.passed,
            sequence_hash=self.sequence_hash,
            frames=min(self.frames, 100_000),
        )
