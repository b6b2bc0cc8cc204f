"""Challenge-bound active liveness: prompts derived from the RP's challenge, answered on camera.

- :mod:`~devicebio.liveness.active`: the prompt sequence, tracked frame by frame
  (:class:`ActiveLiveness`, its thresholds :class:`LivenessConfig`).
- :mod:`~devicebio.liveness.parallax`: the flat-surface test (a photo or screen moves like a
  plane) and the landmark-motion measures it shares with the session.
- :mod:`~devicebio.liveness.results`: what a session returns (:class:`LivenessResult`) and the
  plug-in point for other presentation-attack detectors.
- :mod:`~devicebio.liveness.passive`: the passive PAD, one such plug-in.
"""

from __future__ import annotations

from devicebio.liveness.active import ActiveLiveness, FrameMeasure, LivenessConfig
from devicebio.liveness.passive import PassivePadDetector, default_detectors
from devicebio.liveness.results import (
    LivenessFailure,
    LivenessResult,
    PadVerdict,
    PresentationAttackDetector,
)

__all__ = [
    "ActiveLiveness",
    "FrameMeasure",
    "LivenessConfig",
    "LivenessFailure",
    "LivenessResult",
    "PadVerdict",
    "PassivePadDetector",
    "PresentationAttackDetector",
    "default_detectors",
]
