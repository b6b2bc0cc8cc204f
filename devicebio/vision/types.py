"""Plain data shared by the vision stages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One face found in an image, in that image's pixel coordinates (x right, y down).

    ``box`` is (left, top, right, bottom). ``keypoints`` are detector-specific (BlazeFace
    gives 6: right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion; MMOD
    gives none). ``score`` is the detector's own confidence, comparable only within one
    detector.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]
