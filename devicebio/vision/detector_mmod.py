"""dlib's CNN face detector (MMOD) on onnxruntime, reproducing ``dlib.cnn_face_detection_model_v1``.

The network (built by :mod:`devicebio.vision.build.mmod`) is fully convolutional; what makes
dlib's detections what they are is the code around it, reproduced here step by step:

1. optional up-sampling (``upsample`` times): dlib's ``pyramid_up`` with ``pyramid_down<2>``,
   a bilinear resize of the uint8 RGB image to (2H+1) x (2W+2);
2. the *tiled image pyramid* of ``input_rgb_image_pyramid<pyramid_down<6>>``: the image and
   its successive 5/6-scaled copies are placed in one canvas (first column top to bottom,
   then a second column bottom to top on the right), with padding between tiles and around
   the canvas. Each level is a bilinear resize of the level before it, computed as dlib's
   float code does (same coordinate arithmetic and float32 rounding). The canvas is filled
   with the mean colour so that its padding is 0 after the graph's normalisation, as in dlib;
3. one run of the network over the canvas;
4. every output cell with a score above the threshold (0) becomes an 80x80 window centred on
   the cell's input-tensor point, mapped back to the image through the pyramid level whose
   tile is nearest to it (dlib's ``tiled_pyramid_to_image``), rounded to integer pixels;
5. greedy non-max suppression in score order with dlib's ``test_box_overlap`` (intersection
   over the *bounding* box of the pair > 0.338, or one box covered entirely);
6. if up-sampled, boxes are mapped back down with ``pyramid_down<2>``'s ``rect_down``.

Boxes: dlib reports inclusive pixel rectangles (``right = left + width - 1``). A
:class:`~devicebio.vision.types.Detection` box is continuous/exclusive, so ``box ==
(left, top, right + 1, bottom + 1)`` of dlib's rectangle and an 80-pixel window has width 80;
:func:`to_dlib_box` gives dlib's integers back (e.g. for dlib's shape predictor).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Final

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._checks import check_image
from devicebio.vision.formats import (
    MMOD_INPUT_NAME,
    MMOD_METADATA_KEY,
    MMOD_OUTPUT_NAME,
    MmodConfig,
)
from devicebio.vision.types import Detection

__all__ = ["MAX_SIDE", "MIN_SIDE", "MmodDetector", "to_dlib_box"]

MIN_SIDE: Final = 16
MAX_SIDE: Final = 8192
MAX_UPSAMPLE: Final = 3

# A dlib rectangle: (left, top, right, bottom), inclusive integer pixels.
_Rect = tuple[int, int, int, int]


def _lround(v: float) -> int:
    """C's lround: halves away from zero (what dlib uses to turn drectangle into rectangle)."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def _area(r: _Rect) -> int:
    return max(0, r[2] - r[0] + 1) * max(0, r[3] - r[1] + 1)


def _overlaps(a: _Rect, b: _Rect, iou: float, covered: float) -> bool:
    """dlib's test_box_overlap: intersection over the pair's *bounding box*, or coverage."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    if inter == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inter / outer > iou or inter / _area(a) > covered or inter / _area(b) > covered


def to_dlib_box(detection: Detection) -> _Rect:
    """The detection as dlib's inclusive integer rectangle (left, top, right, bottom)."""
    left, top, right, bottom = detection.box
    return (round(left), round(top), round(right) - 1, round(bottom) - 1)


# --------------------------------------------------------------------------------------------
# dlib's tiled pyramid layout (compute_tiled_image_pyramid_details)


def _pyramid_rects(
    nr: int, nc: int, down: int, padding: int, outer: int
) -> tuple[list[_Rect], int, int]:
    """Tile rectangles (inclusive) of every pyramid level, and the canvas height and width."""
    sizes = [(nc, nr)]
    rate = (down - 1.0) / down
    while True:
        nr = math.floor(rate * nr)
        nc = math.floor(rate * nc)
        if nr * nc == 0 or nr < 5:
            break
        sizes.append((nc, nr))

    w0, h0 = sizes[0]
    total_height = sum(h + padding for _, h in sizes) - 2 * padding
    height = 0
    prev_width = 0
    for w, h in sizes:
        # stop the first column once the next level fits beside the previous one and the
        # first column is tall enough for the rest to double back up the second column
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= total_height - h0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    canvas_h, canvas_w = height + 2 * outer, w0 + 2 * outer

    rects: list[_Rect] = []
    y = outer
    i = 0
    while y < height + outer and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer, y, outer + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        w, h = sizes[i]
        x1, y1 = outer + w0 - 1, y - 1
        x2, y2 = x1 - (w - 1), y1 - (h - 1)
        rect = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        # the second column must not run into the full-size image
        if max(first[0], rect[0]) <= min(first[2], rect[2]) and max(first[1], rect[1]) <= min(
            first[3], rect[3]
        ):
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, canvas_h, canvas_w


def _nearest_rect(rects: list[_Rect], x: int, y: int) -> int:
    best, best_dist = 0, math.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return i
        dx = min(max(x, left), right) - x
        dy = min(max(y, top), bottom) - y
        dist = math.sqrt(dx * dx + dy * dy)
        if dist < best_dist:
            best, best_dist = i, dist
    return best


# --------------------------------------------------------------------------------------------
# dlib's bilinear resize, with its arithmetic (resize_image / interpolate_bilinear)


def _row_coords(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = (n_in - 1) / max(n_out - 1, 1)
    # dlib accumulates the row coordinate (y += y_scale) in double, it does not multiply
    steps = np.full(n_out, scale, np.float64)
    steps[0] = 0.0
    y = np.add.accumulate(steps)
    top = np.floor(y).astype(np.int64)
    bottom = np.minimum(top + 1, n_in - 1)
    return top, bottom, y - top


def _col_coords(n_in: int, n_out: int) -> tuple[int, np.ndarray, np.ndarray, float]:
    """Columns done four at a time in float32 by dlib's SIMD loop: their count, left index and
    fraction; then the x scale for the scalar tail."""
    scale = (n_in - 1) / max(n_out - 1, 1)
    x0 = -4.0 * scale
    groups = n_out // 4 + 2
    acc = np.empty((groups + 1, 4), np.float32)
    acc[0] = np.array([x0, x0 + scale, x0 + 2 * scale, x0 + 3 * scale], np.float32)
    acc[1:] = np.float32(4.0 * scale)
    lanes = np.add.accumulate(acc, axis=0, dtype=np.float32)[1:]
    left = lanes.astype(np.int32)  # truncation, like _mm_cvttps_epi32
    # the SIMD loop stops at the first group whose last lane would read past the row
    stop = np.nonzero(left[:, 3] + 1 >= n_in)[0]
    # (it always stops by then: a column past the end maps past the last input pixel)
    n_simd = min(4 * int(stop[0]) if stop.size else n_out, n_out)
    left_flat = left.reshape(-1)[:n_simd]
    frac = (lanes.reshape(-1)[:n_simd] - left_flat.astype(np.float32)).astype(np.float32)
    return n_simd, left_flat.astype(np.int64), frac, scale


def _resize(src: np.ndarray, out_h: int, out_w: int, to_uint8: bool) -> np.ndarray:
    """Resize an (h, w, C) image like dlib: float32 weights in its 4-wide loop, double precision
    in its scalar loop over the last columns. ``to_uint8`` truncates as dlib's rgb_pixel
    version does; otherwise float32 out, as dlib's float-tensor version."""
    h_in, w_in, c_ = src.shape
    top, bottom, tb = _row_coords(h_in, out_h)
    n_simd, left, lr, scale = _col_coords(w_in, out_w)
    # rows gathered once, then viewed as (rows, w * C) so that every column gather and every
    # arithmetic step below is a plain 2-D operation (numpy is slow broadcasting over C)
    rows_t = src[top].astype(np.float32, copy=False).reshape(out_h, w_in * c_)
    rows_b = src[bottom].astype(np.float32, copy=False).reshape(out_h, w_in * c_)
    chan = np.arange(c_)
    out = np.empty((out_h, out_w * c_), np.float32)

    if n_simd > 0:
        idx_l = (left[:n_simd, None] * c_ + chan).reshape(-1)
        idx_r = idx_l + c_
        lr_s = np.repeat(lr[:n_simd], c_)
        inv_lr = np.float32(1) - lr_s
        tb32 = tb.astype(np.float32)[:, None]
        inv_tb32 = (1.0 - tb).astype(np.float32)[:, None]
        # dlib's order of operations: ((tlf*tl + trf*tr) + blf*bl) + brf*br, all float32
        val = np.take(rows_t, idx_l, axis=1)
        val *= inv_tb32 * inv_lr
        tmp = np.take(rows_t, idx_r, axis=1)
        tmp *= inv_tb32 * lr_s
        val += tmp
        tmp = np.take(rows_b, idx_l, axis=1)
        tmp *= tb32 * inv_lr
        val += tmp
        tmp = np.take(rows_b, idx_r, axis=1)
        tmp *= tb32 * lr_s
        val += tmp
        out[:, : n_simd * c_] = val
    if n_simd < out_w:
        n_tail = out_w - n_simd
        steps = np.full(n_tail, scale, np.float64)
        steps[0] = -scale + n_simd * scale + scale
        x = np.add.accumulate(steps)
        left_t = np.floor(x).astype(np.int64)
        right_t = np.minimum(left_t + 1, w_in - 1)
        idx_l = (left_t[:, None] * c_ + chan).reshape(-1)
        idx_r = (right_t[:, None] * c_ + chan).reshape(-1)
        # the rgb version keeps the fraction in double, the float version rounds it to float
        frac = x - left_t
        lr_t = np.repeat(frac if to_uint8 else frac.astype(np.float32), c_)
        tbc = tb[:, None]
        tl, tr = np.take(rows_t, idx_l, axis=1), np.take(rows_t, idx_r, axis=1)
        bl, br = np.take(rows_b, idx_l, axis=1), np.take(rows_b, idx_r, axis=1)
        if to_uint8:
            tl, tr, bl, br = (a.astype(np.float64) for a in (tl, tr, bl, br))
        inv_lr_t = 1 - lr_t  # stays float32 for float32 lr_t, as (1 - lr_frac) in dlib
        upper = inv_lr_t * tl + lr_t * tr
        lower = inv_lr_t * bl + lr_t * br
        val64 = (1 - tbc) * upper.astype(np.float64) + tbc * lower.astype(np.float64)
        out[:, n_simd * c_ :] = np.trunc(val64) if to_uint8 else val64.astype(np.float32)
    out = out.reshape(out_h, out_w, c_)
    if to_uint8:
        return np.clip(np.trunc(out), 0, 255).astype(np.uint8)
    return out


def _pyramid_up(rgb: np.ndarray) -> np.ndarray:
    """dlib's pyramid_up(img, pyramid_down<2>) on an (H, W, 3) uint8 image."""
    h, w = rgb.shape[:2]
    # rect_up of the image rectangle, rounded: (p + (1.25, 0.75)) * 2 on each corner
    out_w = _lround((w - 1 + 1.25) * 2) + 1
    out_h = _lround((h - 1 + 0.75) * 2) + 1
    return _resize(rgb, out_h, out_w, to_uint8=True)


# --------------------------------------------------------------------------------------------


class MmodDetector:
    """Finds faces with dlib's CNN (MMOD) detector, as ``dlib.cnn_face_detection_model_v1``.

    ``session`` is an onnxruntime ``InferenceSession`` of the model built by
    ``build_mmod_onnx``; the detector settings are read from that model's metadata.
    """

    def __init__(self, session: Any) -> None:
        try:
            meta = session.get_modelmeta().custom_metadata_map
            text = meta[MMOD_METADATA_KEY]
            inputs = [i.name for i in session.get_inputs()]
            outputs = [o.name for o in session.get_outputs()]
        except Exception as exc:
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED, "session does not hold the MMOD detector model"
            ) from exc
        if inputs != [MMOD_INPUT_NAME] or outputs != [MMOD_OUTPUT_NAME]:
            raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "unexpected MMOD model inputs/outputs")
        self._session = session
        self._cfg = MmodConfig.from_json(text)
        self._fill = np.array(self._cfg.mean_rgb, np.float32)

    @property
    def config(self) -> MmodConfig:
        return self._cfg

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[Detection]:
        """Faces in an (H, W, 3) uint8 RGB image, best score first.

        ``upsample`` doubles the image that many times first (finds faces smaller than ~80 px
        at the cost of ~4x time per step). Raises ``DeviceBioError``: BAD_IMAGE for anything
        but an HxWx3 uint8 array with sides in [16, 8192]; INVALID_ARGUMENT for a bad
        ``upsample`` (an int in [0, 3] whose up-sampled image still fits 8192 px).
        """
        img = _check_image(rgb)
        if isinstance(upsample, bool) or not isinstance(upsample, int | np.integer):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "upsample must be an integer")
        upsample = int(upsample)
        if not 0 <= upsample <= MAX_UPSAMPLE:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"upsample must be in 0..{MAX_UPSAMPLE}")
        if max(img.shape[:2]) * (2**upsample) + 2 * upsample > MAX_SIDE:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "image too large for this upsample")
        for _ in range(upsample):
            img = _pyramid_up(img)
        rects = self._detect_rects(img)
        out: list[Detection] = []
        for rect, score in rects:
            if upsample:
                rect = _rect_down2(rect, upsample)
            left, top, right, bottom = rect
            box = (float(left), float(top), float(right + 1), float(bottom + 1))
            out.append(Detection(box=box, score=score))
        return out

    # ----------------------------------------------------------------------------------------

    def _canvas(self, img: np.ndarray) -> tuple[np.ndarray, list[_Rect]]:
        cfg = self._cfg
        h, w = img.shape[:2]
        rects, canvas_h, canvas_w = _pyramid_rects(
            h, w, cfg.pyramid_down, cfg.pyramid_padding, cfg.pyramid_outer_padding
        )
        canvas = np.empty((1, canvas_h, canvas_w, 3), np.float32)
        canvas[0] = self._fill
        l0, t0 = rects[0][0], rects[0][1]
        canvas[0, t0 : t0 + h, l0 : l0 + w] = img
        for prev, cur in itertools.pairwise(rects):
            src = canvas[0, prev[1] : prev[3] + 1, prev[0] : prev[2] + 1]
            out_h, out_w = cur[3] - cur[1] + 1, cur[2] - cur[0] + 1
            canvas[0, cur[1] : cur[3] + 1, cur[0] : cur[2] + 1] = _resize(
                src, out_h, out_w, to_uint8=False
            )
        return canvas, rects

    def _detect_rects(self, img: np.ndarray) -> list[tuple[_Rect, float]]:
        cfg = self._cfg
        canvas, rects = self._canvas(img)
        try:
            (scores,) = self._session.run([MMOD_OUTPUT_NAME], {MMOD_INPUT_NAME: canvas})
        except Exception as exc:  # onnxruntime's own errors, e.g. out of memory
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED, f"MMOD inference failed ({type(exc).__name__})"
            ) from exc
        scores = np.asarray(scores)[0]
        ks, rs, cs = np.nonzero(scores > cfg.score_threshold)
        values = scores[ks, rs, cs].astype(np.float64)
        # dlib sorts candidates by score, best first (ties: keep scan order)
        order = np.argsort(-values, kind="stable")
        ratio = cfg.pyramid_down / (cfg.pyramid_down - 1.0)

        candidates: list[tuple[_Rect, float]] = []
        for j in order:
            k, r, c = int(ks[j]), int(rs[j]), int(cs[j])
            win_w, win_h = cfg.windows[k][0], cfg.windows[k][1]
            px = cfg.map_scale * c + cfg.map_offset_x
            py = cfg.map_scale * r + cfg.map_offset_y
            half_w, half_h = (win_w - 1) / 2, (win_h - 1) / 2
            corners = [px - half_w, py - half_h, px + half_w, py + half_h]
            # the window's centre is the integer point (px, py) itself
            level = _nearest_rect(rects, px, py)
            ox, oy = rects[level][0], rects[level][1]
            x1, y1, x2, y2 = corners[0] - ox, corners[1] - oy, corners[2] - ox, corners[3] - oy
            for _ in range(level):
                x1, y1 = x1 * ratio + 0.3, y1 * ratio + 0.3
                x2, y2 = x2 * ratio + 0.3, y2 * ratio + 0.3
            rect = (_lround(x1), _lround(y1), _lround(x2), _lround(y2))
            candidates.append((rect, float(values[j])))

        kept: list[tuple[_Rect, float]] = []
        for rect, score in candidates:
            if any(_overlaps(k_rect, rect, cfg.nms_iou, cfg.nms_covered) for k_rect, _ in kept):
                continue
            kept.append((rect, score))
        return kept


def _rect_down2(rect: _Rect, levels: int) -> _Rect:
    """pyramid_down<2>'s rect_down: p / 2 - (1.25, 0.75) per level, then rounded."""
    x1, y1, x2, y2 = (float(v) for v in rect)
    for _ in range(levels):
        x1, y1 = x1 / 2.0 - 1.25, y1 / 2.0 - 0.75
        x2, y2 = x2 / 2.0 - 1.25, y2 / 2.0 - 0.75
    return (_lround(x1), _lround(y1), _lround(x2), _lround(y2))


def _check_image(rgb: object) -> np.ndarray:
    return check_image(rgb, min_side=MIN_SIDE, max_side=MAX_SIDE)
