"""The passive PAD as a :class:`~devicebio.liveness.results.PresentationAttackDetector`.

``PassivePadDetector`` scores a handful of the session's frames with the MiniFASNet pair
(:class:`devicebio.vision.pad.PassivePad`) after the active checks have run, and passes the
session when the median fused live probability reaches ``threshold``. Scoring a subset keeps
the per-frame cost of the liveness stack unchanged: about 2 x 1.5 ms per scored frame, once,
at the end (``max_frames`` frames, evenly spread over the frames that had a face).

The verdict's ``detail`` names the models that ran (id = name @ first 16 hex of the ONNX
sha256) and how many frames they saw, never a score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.liveness.results import PASSIVE_PAD_NAME, PadVerdict
from devicebio.sources import Frame

# Median fused live probability a session needs. Chosen on the same data it was measured on
# (benchmarks/pad_scores.py, docs/data-recaptures.md): no genuine clip's median fell below
# 0.45, no screen replay's rose above 0.26. Three attack clips cannot tune a threshold.
DEFAULT_THRESHOLD: Final = 0.4


def default_detectors(threads: int | None = None) -> tuple[PassivePadDetector, ...]:
    """The PAD :class:`~devicebio.liveness.ActiveLiveness` runs unless told otherwise: the
    MiniFASNet pair when its ONNX files are installed, else none (active checks only; the
    signed claim's kind then says so). A file that is present but does not match its pin is
    an error, never a silent downgrade."""
    try:
        return (PassivePadDetector(threads=threads),)
    except DeviceBioError as exc:
        if exc.reason is Reason.MODEL_MISSING:
            return ()
        raise


class PassivePadDetector:
    """Passive presentation-attack detection over a session's frames (fails closed)."""

    name = PASSIVE_PAD_NAME

    def __init__(
        self,
        pad: Any = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        max_frames: int = 12,
        min_frames: int = 3,
        threads: int | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "threshold must be in (0, 1)")
        if not 1 <= min_frames <= max_frames:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "need 1 <= min_frames <= max_frames")
        if pad is None:
            from devicebio.vision.pad import PassivePad

            pad = PassivePad(threads=threads)
        self._pad = pad
        self.threshold = float(threshold)
        self.max_frames = int(max_frames)
        self.min_frames = int(min_frames)
        self.model_ids: tuple[str, ...] = tuple(pad.model_ids)

    def assess(self, frames: Sequence[Frame], faces: Sequence[Any]) -> PadVerdict:
        with_face = [i for i, face in enumerate(faces) if face is not None and i < len(frames)]
        ran = ",".join(self.model_ids)
        if len(with_face) < self.min_frames:
            return PadVerdict(self.name, False, "passive", f"{ran}; too few frames with a face")
        picks = np.linspace(0, len(with_face) - 1, min(self.max_frames, len(with_face)))
        chosen = sorted({with_face[int(p + 0.5)] for p in picks})
        fused = [self._pad.score(frames[i].rgb, faces[i]).fused for i in chosen]
        passed = bool(np.median(fused) >= self.threshold)
        return PadVerdict(self.name, passed, "passive", f"{ran}; {len(chosen)} frames")
