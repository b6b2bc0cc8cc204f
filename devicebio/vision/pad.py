"""Passive presentation-attack detection from single frames: minivision's MiniFASNet pair
(Apache-2.0) on onnxruntime, plus a cheap screen cue (moire peaks in the face's spectrum).

The two ONNX files ship in ``devicebio/models/pad/`` (converted once by
``devicebio.vision.build.minifasnet``; see ``PROVENANCE`` there) and are sha256-checked on
load. Preprocessing follows upstream exactly, because the models saw nothing else in training:

- the face box (upstream: their RetinaFace detector's (x, y, w, h)) is scaled about its centre
  by 2.7 (MiniFASNetV2) or 4.0 (MiniFASNetV1SE), the scale shrunk so the box fits the frame,
  then shifted inside it; corners are truncated to int and the slice includes the far corner;
- the crop is resized to 80x80 (bilinear), kept in **BGR** order and **0..255** floats;
- the live probability is the softmax's class 1; upstream fuses the models by averaging.

Scores are biometric-derived data: they stay in memory, are never logged or put in errors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._checks import check_image
from devicebio.vision._ort import make_session
from devicebio.vision.types import Detection

PAD_DIR: Final = Path(__file__).resolve().parent.parent / "models" / "pad"
INPUT_SIZE: Final = 80
LIVE_CLASS: Final = 1  # classes: 0 print, 1 live, 2 replay


@dataclass(frozen=True)
class PadModelSource:
    name: str  # our name; also the ONNX file's stem
    checkpoint: str  # upstream file name in resources/anti_spoof_models/
    scale: float  # the face box is enlarged this much before the 80x80 resize
    checkpoint_sha256: str
    onnx_sha256: str


PAD_MODELS: Final[dict[str, PadModelSource]] = {
    m.name: m
    for m in (
        PadModelSource(
            name="minifasnet_v2_s2.7",
            checkpoint="2.7_80x80_MiniFASNetV2.pth",
            scale=2.7,
            checkpoint_sha256="a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
            onnx_sha256="c1ddc41386e64a219dd0562daaf369439c17ea65ced826c4c440499c0a144be5",
        ),
        PadModelSource(
            name="minifasnet_v1se_s4.0",
            checkpoint="4_0_0_80x80_MiniFASNetV1SE.pth",
            scale=4.0,
            checkpoint_sha256="84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
            onnx_sha256="851e1cff6c6efc3f1f534c5c8547f8fac1a9fee2b65ae8970602bd6b3172cadd",
        ),
    )
}

# BlazeFace's box (types.Detection.box) -> the box upstream's own detector (a RetinaFace
# Caffe model) draws on the same frame: theirs is this much wider / taller, its centre this
# far down in BlazeFace heights (negative: up). Medians over 1,211 frames of 30 clips, both
# detectors on the same frames (docs/data-recaptures.md). With the mapped box the fused score
# differs from upstream's own pipeline by a median 0.002 (90th percentile 0.06).
BLAZE_TO_UPSTREAM_W: Final = 1.02
BLAZE_TO_UPSTREAM_H: Final = 1.06
BLAZE_TO_UPSTREAM_DY: Final = -0.035


@dataclass(frozen=True)
class PassiveScore:
    """Live probabilities (0..1, higher = more likely a live face) of one frame.

    ``live`` has one entry per model in ``PassivePad.model_ids`` order; ``fused`` is their
    mean (upstream's rule). ``moire`` is the screen cue (higher = more screen-like), None when
    the face is too small to measure it.
    """

    live: tuple[float, ...] = field(repr=False)
    fused: float = field(repr=False)
    moire: float | None = field(default=None, repr=False)


def upstream_box(detection: Detection) -> tuple[float, float, float, float]:
    """(x, y, w, h) in upstream's convention from a BlazeFace detection."""
    left, top, right, bottom = detection.box
    w, h = right - left, bottom - top
    cx = (left + right) / 2.0
    cy = (top + bottom) / 2.0 + BLAZE_TO_UPSTREAM_DY * h
    uw, uh = w * BLAZE_TO_UPSTREAM_W, h * BLAZE_TO_UPSTREAM_H
    return (cx - uw / 2.0, cy - uh / 2.0, uw, uh)


def crop_corners(
    frame_w: int, frame_h: int, box: tuple[float, float, float, float], scale: float
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive, of the region upstream crops for ``box`` at ``scale``."""
    x, y, bw, bh = box
    if not (bw > 0 and bh > 0):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "the face box must have a positive size")
    # Upstream's rule: never ask for more than the frame holds; keep the centre, then push
    # the box back inside the frame.
    scale = min((frame_h - 1) / bh, (frame_w - 1) / bw, scale)
    nw, nh = bw * scale, bh * scale
    cx, cy = x + bw / 2.0, y + bh / 2.0
    x0, y0, x1, y1 = cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0
    if x0 < 0:
        x1 -= x0
        x0 = 0
    if y0 < 0:
        y1 -= y0
        y0 = 0
    if x1 > frame_w - 1:
        x0 -= x1 - frame_w + 1
        x1 = frame_w - 1
    if y1 > frame_h - 1:
        y0 -= y1 - frame_h + 1
        y1 = frame_h - 1
    return int(x0), int(y0), int(x1), int(y1)


def model_input(
    rgb: np.ndarray, box: tuple[float, float, float, float], scale: float
) -> np.ndarray:
    """The (1, 3, 80, 80) float32 BGR 0..255 tensor upstream feeds its model."""
    import cv2

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = crop_corners(w, h, box, scale)
    # upstream crops with Python slices: a corner pushed below 0 wraps, like theirs would;
    # clamp instead so a box partly outside a tiny frame cannot produce an empty crop
    x0, y0 = max(x0, 0), max(y0, 0)
    patch = rgb[y0 : y1 + 1, x0 : x1 + 1, ::-1]
    if patch.shape[0] < 2 or patch.shape[1] < 2:
        raise DeviceBioError(Reason.BAD_IMAGE, "the face region is too small to assess")
    small = cv2.resize(np.ascontiguousarray(patch), (INPUT_SIZE, INPUT_SIZE))
    return np.ascontiguousarray(small.astype(np.float32).transpose(2, 0, 1)[None])


# ------------------------------------------------------------------------------ screen cue

_MOIRE_SIDE: Final = 128  # analysed at native resolution: resampling would erase the grid
_MOIRE_MIN_SIDE: Final = 48


def moire_score(rgb: np.ndarray, box: tuple[float, float, float, float]) -> float | None:
    """How far the strongest isolated peak of the face's spectrum rises above the spectrum's
    own radial profile (log10 magnitude). A screen filmed by a camera adds a periodic grid /
    moire (sharp peaks off the axes); skin and ordinary texture fall off smoothly.

    The central square of the face box (at most 128 px, NOT resized) is windowed; frequencies
    below 1/8 of the sampling rate (face shape, lighting) and the two axes (block-coding
    seams, row/column banding that real webcams also show) are left out.
    """
    x, y, bw, bh = box
    side = int(min(bw, bh) * 0.8)
    if side < _MOIRE_MIN_SIDE:
        return None
    side = min(side, _MOIRE_SIDE)
    cx, cy = int(x + bw / 2.0), int(y + bh / 2.0)
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    patch = rgb[y0 : y0 + side, x0 : x0 + side]
    if patch.shape[0] < _MOIRE_MIN_SIDE or patch.shape[1] < _MOIRE_MIN_SIDE:
        return None
    grey = patch.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey -= grey.mean()
    n0, n1 = grey.shape
    win = np.outer(np.hanning(n0), np.hanning(n1)).astype(np.float32)
    spec = np.log10(np.abs(np.fft.fftshift(np.fft.fft2(grey * win))) + 1e-3)
    fy = (np.arange(n0) - n0 // 2) / n0
    fx = (np.arange(n1) - n1 // 2) / n1
    ry, rx = np.meshgrid(fy, fx, indexing="ij")
    radius = np.hypot(ry, rx)
    band = (radius >= 0.125) & (radius <= 0.5) & (np.abs(ry) > 1.5 / n0) & (np.abs(rx) > 1.5 / n1)
    # radial profile: the median log magnitude in rings one bin wide
    ring = np.minimum((radius * min(n0, n1)).astype(int), min(n0, n1) // 2)
    profile = np.zeros(ring.max() + 1, dtype=np.float32)
    for r in np.unique(ring[band]):
        profile[r] = np.median(spec[band & (ring == r)])
    excess = spec[band] - profile[ring[band]]
    return float(excess.max())


# ------------------------------------------------------------------------------ the models


def _load(source: PadModelSource, folder: Path) -> bytes:
    path = folder / f"{source.name}.onnx"
    if not path.is_file():
        raise DeviceBioError(Reason.MODEL_MISSING, f"{source.name}.onnx is not in {folder}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != source.onnx_sha256:
        raise DeviceBioError(
            Reason.MODEL_HASH_MISMATCH,
            f"{path} does not match its pinned sha256: refusing to load it",
        )
    return data


class PassivePad:
    """Scores frames with both MiniFASNet models (2.7x and 4.0x context)."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        folder = Path(model_dir) if model_dir is not None else PAD_DIR
        self._models: list[tuple[PadModelSource, Any]] = [
            (source, make_session(_load(source, folder), providers, threads))
            for source in PAD_MODELS.values()
        ]
        self.model_ids: tuple[str, ...] = tuple(
            f"{s.name}@{s.onnx_sha256[:16]}" for s, _ in self._models
        )

    def score_box(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> PassiveScore:
        """Scores for the face at ``box`` = (x, y, w, h) in upstream's convention."""
        rgb = check_image(rgb)
        live = []
        for source, session in self._models:
            try:
                (probs,) = session.run(
                    ["probabilities"], {"input": model_input(rgb, box, source.scale)}
                )
            except DeviceBioError:
                raise
            except Exception as exc:  # onnxruntime's own exception types
                raise DeviceBioError(
                    Reason.MODEL_MISSING, f"PAD inference failed: {type(exc).__name__}"
                ) from exc
            live.append(float(probs[0, LIVE_CLASS]))
        return PassiveScore(
            live=tuple(live), fused=float(np.mean(live)), moire=moire_score(rgb, box)
        )

    def score(self, rgb: np.ndarray, detection: Detection) -> PassiveScore:
        """Scores for a face found by BlazeFace (mapped to upstream's box convention)."""
        return self.score_box(rgb, upstream_box(detection))
