"""Decoded footage: each annotated video decoded once, and an ActiveLiveness that runs its
per-frame models once per recorded frame (the evaluation's only caches; neither changes a
decision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation.liveness.annotation import Annotation
from devicebio.liveness import ActiveLiveness, FrameMeasure

MAX_WIDTH = 640  # large videos are downscaled at decode time, as a 640-px camera would see them


class FrameCache:
    """Each needed video decoded ONCE (downscaled to <= 640 px wide); only annotated frames kept."""

    def __init__(self, video_dir: Path, ann: Annotation) -> None:
        import cv2

        self.fps: dict[str, float] = {}
        self._frames: dict[tuple[str, int], np.ndarray] = {}
        wanted: dict[str, set[int]] = {}
        for seg in ann.segments:
            wanted.setdefault(seg.video, set()).update(seg.frames)
        for name, idx in sorted(wanted.items()):
            cap = cv2.VideoCapture(str(video_dir / name))
            if not cap.isOpened():
                raise DeviceBioError(Reason.FRAME_SOURCE, f"cannot open video {name}")
            self.fps[name] = float(ann.videos[name].get("fps") or cap.get(cv2.CAP_PROP_FPS))
            i, last = 0, max(idx)
            while i <= last:
                ok, bgr = cap.read()
                if not ok:
                    break
                if i in idx:
                    h, w = bgr.shape[:2]
                    if w > MAX_WIDTH:
                        size = (MAX_WIDTH, round(h * MAX_WIDTH / w))
                        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                    self._frames[(name, i)] = np.ascontiguousarray(bgr[:, :, ::-1])
                i += 1
            cap.release()
            missing = [j for j in idx if (name, j) not in self._frames]
            if missing:
                raise DeviceBioError(
                    Reason.FRAME_SOURCE, f"{name}: frames {min(missing)}.. do not decode"
                )

        self._mirrored: dict[tuple[str, int], np.ndarray] = {}
        self._ids = {id(a) for a in self._frames.values()}

    def get(self, video: str, index: int, flip: bool = False) -> np.ndarray:
        """The frame; the same array object every time it is asked for (see ``owns``)."""
        rgb = self._frames[(video, index)]
        if not flip:
            return rgb
        if (video, index) not in self._mirrored:
            mirrored = np.ascontiguousarray(rgb[:, ::-1])
            self._mirrored[(video, index)] = mirrored
            self._ids.add(id(mirrored))
        return self._mirrored[(video, index)]

    def owns(self, rgb: np.ndarray) -> bool:
        """True for an array this cache handed out. They live as long as the cache, so no
        other array can share their id meanwhile."""
        return id(rgb) in self._ids


class RememberingLiveness(ActiveLiveness):
    """ActiveLiveness whose per-frame models run once per recorded video frame.

    Genuine, replay, identity-mismatch and face-swap sessions are spliced from the same few
    hundred annotated frames, so most of an evaluation would recompute the same meshes and
    embeddings. The models are deterministic functions of the pixels, so remembering their
    outputs per frame (only for the cache's own frames, never for rendered photo attacks)
    changes no decision, only the time the evaluation takes. Everything else (optical flow,
    the session logic) still runs on every frame.
    """

    def __init__(self, pipeline: Any, cache: FrameCache, detectors: Any = None) -> None:
        super().__init__(pipeline, detectors=detectors)
        self._cache = cache
        self._measured: dict[tuple[int, bool], FrameMeasure | None] = {}
        self._embedded: dict[int, np.ndarray | None] = {}

    def measure(self, rgb: np.ndarray, *, eyes: bool = True) -> FrameMeasure | None:
        if not self._cache.owns(rgb):
            return super().measure(rgb, eyes=eyes)
        key = (id(rgb), eyes)
        if key not in self._measured:
            self._measured[key] = super().measure(rgb, eyes=eyes)
        return self._measured[key]

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        if not self._cache.owns(rgb):
            return super().embed(rgb)
        if id(rgb) not in self._embedded:
            self._embedded[id(rgb)] = super().embed(rgb)
        return self._embedded[id(rgb)]
