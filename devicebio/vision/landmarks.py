"""Five facial landmarks: dlib's 5-point shape predictor, ported to numpy.

The model is a cascade of 15 forests of 500 regression trees (dlib's ``shape_predictor``, an
ensemble of regression trees after Kazemi & Sullivan). Each level samples 800 grey pixels at
positions defined relative to the current shape estimate, runs every tree on differences of
pixel pairs, and adds the chosen leaves' shape updates. Here all 500 trees of a level are
walked at once with array indexing, so a face takes a few milliseconds.

The port follows dlib's arithmetic where it decides a pixel or a point: float32 shapes and
offsets, pixel positions rounded half-up, colour pixels turned grey as the integer mean
``(R + G + B) // 3``, sampled pixels outside the image read as 0, and the final points rounded
to whole pixels like dlib's ``point``. On ~750 real faces (LFW, video frames, 2.6x upscaled
frames) every point equalled dlib's exactly; float rounding could in principle move a sample
pixel, so expect "within a pixel" as the guarantee.

Point order (dlib's): outer and inner corner of the subject's right eye, outer and inner corner
of the left eye, bottom of the nose.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import cv2
import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._checks import check_image
from devicebio.vision.formats import deserialize_shape5
from devicebio.vision.models import MODELS

NUM_POINTS = 5
_PINNED_SHA256 = MODELS["dlib_shape5"].sha256
# Smaller images cannot hold a face worth landmarking; it also keeps 1x1 inputs out.
MIN_IMAGE_SIDE = 8
# Coordinates beyond this are not a face box in any real image; bounding them keeps the
# rounding to integers well inside int64.
_MAX_COORD = 1e7
# The leaf lookup table has 2**splits entries: trees of depth 4 (dlib's default, the shipped
# model's) need 65,536; deeper ones are refused rather than allowed to exhaust memory.
_MAX_DEPTH = 4
_MAX_SPLITS = 2**_MAX_DEPTH - 1


def _bad(message: str) -> DeviceBioError:
    return DeviceBioError(Reason.BAD_IMAGE, message)


def _check_image(image: object) -> np.ndarray:
    """Validate a grey (H, W) or RGB (H, W, 3) uint8 image; return it as an ndarray."""
    return check_image(image, grey_ok=True, min_side=MIN_IMAGE_SIDE, max_side=2**31)


def _check_box(box: object, height: int, width: int) -> tuple[float, float, float, float]:
    if isinstance(box, np.ndarray):
        box = box.tolist()
    if not isinstance(box, Sequence) or isinstance(box, str | bytes) or len(box) != 4:
        raise _bad("box must be (left, top, right, bottom)")
    try:
        left, top, right, bottom = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise _bad("box must hold four numbers") from exc
    if not all(math.isfinite(v) and abs(v) <= _MAX_COORD for v in (left, top, right, bottom)):
        raise _bad("box coordinates must be finite and of image scale")
    if right <= left or bottom <= top:
        raise _bad("box must have right > left and bottom > top")
    if right < 0 or bottom < 0 or left > width - 1 or top > height - 1:
        raise _bad("box lies outside the image")
    return left, top, right, bottom


def _similarity_2x2(src: list[float], dst: list[float]) -> tuple[float, float]:
    """(a, b) of the least-squares similarity [[a, -b], [b, a]] taking ``src`` to ``dst``.

    The closed 2-D form of Umeyama's solution (dlib's find_similarity_transform gets the same
    transform through an SVD), in double precision like dlib. Points are interleaved x, y.
    Plain Python floats: for five points they beat numpy's per-call overhead.
    """
    n = len(src) // 2
    mx_s = sum(src[0::2]) / n
    my_s = sum(src[1::2]) / n
    mx_d = sum(dst[0::2]) / n
    my_d = sum(dst[1::2]) / n
    norm = dot = cross = 0.0
    for i in range(n):
        sx, sy = src[2 * i] - mx_s, src[2 * i + 1] - my_s
        dx, dy = dst[2 * i] - mx_d, dst[2 * i + 1] - my_d
        norm += sx * sx + sy * sy
        dot += sx * dx + sy * dy
        cross += sx * dy - sy * dx
    if norm == 0.0:
        return 1.0, 0.0
    return dot / norm, cross / norm


class ShapePredictor5:
    """dlib's 5-point face landmark predictor, on numpy.

    Build the model file once with ``devicebio.vision.build.shape5.build_shape5_model`` and
    load it with :meth:`from_bytes`; :meth:`predict` is then pure numpy and thread-safe.
    """

    num_points = NUM_POINTS

    def __init__(self, model: bytes) -> None:
        arrays = deserialize_shape5(model)
        parts, cascades, trees, splits, _ = arrays.dims
        if parts != NUM_POINTS:
            raise DeviceBioError(
                Reason.MALFORMED_DATA, f"shape predictor has {parts} points, expected 5"
            )
        self._mean = arrays.mean_shape.astype(np.float32)
        self._mean_list: list[float] = self._mean.astype(np.float64).tolist()
        self._cascades = cascades
        self._trees = trees
        self._depth = int(splits + 1).bit_length() - 1
        self._splits = splits
        if splits > _MAX_SPLITS:
            raise DeviceBioError(
                Reason.MALFORMED_DATA, f"shape predictor trees deeper than {_MAX_DEPTH} levels"
            )

        # Split tests stored node-major, one gather per level serving all trees: node n of
        # tree t sits at n * trees + t, so a level's outcomes come out as a (splits, trees)
        # matrix whose rows are bit planes. The leaf l of tree t sits at t * (splits + 1) + l.
        def node_major(a: np.ndarray) -> np.ndarray:
            by_tree = a.reshape(cascades, trees, splits)
            return np.ascontiguousarray(by_tree.transpose(0, 2, 1).reshape(cascades, -1))

        self._thresh = node_major(arrays.thresholds)
        feats = arrays.split_features.astype(np.intp)
        self._idx1 = node_major(feats[..., 0])
        self._idx2 = node_major(feats[..., 1])
        self._leaves = arrays.leaves.reshape(cascades, trees * (splits + 1), 2 * parts)
        self._leaf_base = np.arange(trees, dtype=np.intp) * (splits + 1)
        # Every tree has the same complete shape, so the leaf a tree reaches is one function
        # of its split outcomes: pack them into an integer and look the leaf up, instead of
        # walking the trees level by level. The packing is one float32 matrix-vector product
        # of the bit planes with the powers of two: exact, since every sum is an integer
        # below 2**16, and a BLAS call where an integer product was a slow generic loop.
        self._bit_weights = (2.0 ** np.arange(splits)).astype(np.float32)
        self._leaf_of_bits = _leaf_table(splits, self._depth)
        # Per level: where each feature's anchor x and y sit in the shape vector, (2, F).
        anchors = arrays.anchors.astype(np.intp) * 2
        self._anchor_xy = np.stack([anchors, anchors + 1], axis=1)
        self._off_x = np.ascontiguousarray(arrays.offsets[..., 0])
        self._off_y = np.ascontiguousarray(arrays.offsets[..., 1])

    @classmethod
    def from_bytes(
        cls, model: bytes, *, expected_sha256: str | None = _PINNED_SHA256
    ) -> ShapePredictor5:
        """Load a model file made by ``build_shape5_model``.

        The file's sha256 must equal the pinned one (``DeviceBioError(MODEL_HASH_MISMATCH)``
        otherwise); pass ``expected_sha256=None`` only for a model you built and checked
        yourself.
        """
        if not isinstance(model, bytes):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "model must be bytes")
        if expected_sha256 is not None and hashlib.sha256(model).hexdigest() != expected_sha256:
            raise DeviceBioError(
                Reason.MODEL_HASH_MISMATCH, "shape predictor model differs from the pinned one"
            )
        return cls(model)

    def predict(
        self,
        image: np.ndarray,
        box: tuple[float, float, float, float],
        *,
        subpixel: bool = False,
    ) -> np.ndarray:
        """The 5 landmarks of the face in ``box`` as a (5, 2) float32 array of (x, y) pixels.

        ``image`` is uint8 RGB (H, W, 3) or grey (H, W). ``box`` is (left, top, right,
        bottom) in pixels; the predictor maps the unit square onto [left, right] x [top,
        bottom], so a dlib ``rectangle`` gives exactly dlib's result when passed as
        ``(r.left(), r.top(), r.right(), r.bottom())``.

        Points are whole pixels, rounded as dlib rounds them, unless ``subpixel`` is true.
        Raises ``DeviceBioError(Reason.BAD_IMAGE)`` for an unusable image or box.
        """
        img = _check_image(image)
        height, width = img.shape[:2]
        left, top, right, bottom = _check_box(box, height, width)
        sx, sy = right - left, bottom - top
        scale = np.array([[sx], [sy]])
        origin = np.array([[left], [top]])
        size = np.array([[width], [height]], dtype=np.uintp)
        # Rows of the image, one pixel each, so one gather reads a sample's value or colour.
        pixels = np.ascontiguousarray(img).reshape(height * width, -1)
        grey = img.ndim == 2
        shape = self._mean.copy()
        acc = np.empty((self._trees + 1, shape.shape[0]), dtype=np.float32)
        go_left = np.empty((self._splits, self._trees), dtype=np.float32)
        for level in range(self._cascades):
            # Feature pixels: offsets turned by the mean->current similarity and added to their
            # anchor landmark, in float32 like dlib; then onto the image in float64.
            a, b = _similarity_2x2(self._mean_list, shape.tolist())
            # Rows: x = a*dx - b*dy, y = b*dx + a*dy, each then plus its anchor coordinate.
            unit = np.array([[a], [b]], dtype=np.float32) * self._off_x[level]
            unit += np.array([[-b], [a]], dtype=np.float32) * self._off_y[level]
            unit += shape[self._anchor_xy[level]]
            pos = unit.astype(np.float64)
            pos *= scale
            pos += origin
            pos += 0.5
            pix = np.floor(pos, out=pos).astype(np.intp)
            feats = _sample(pixels, grey, pix, size, width)
            # Every split's test of the level at once, as 0.0/1.0 bit planes (1 = go left).
            diff = feats.take(self._idx1[level]) - feats.take(self._idx2[level])
            np.greater(diff, self._thresh[level], out=go_left.reshape(-1), casting="unsafe")
            leaf = self._leaf_of_bits[(self._bit_weights @ go_left).astype(np.intp)]
            leaf += self._leaf_base
            acc[0] = shape
            np.take(self._leaves[level], leaf, axis=0, out=acc[1:])
            # Row after row, the order in which dlib adds the trees' outputs, so the float32
            # sums come out bit-identical: OpenCV's column reduction adds rows in order in
            # float32 (numpy's add.reduce does the same at twice the cost).
            shape = cv2.reduce(acc, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F)[0]
        xy = shape.reshape(-1, 2).astype(np.float64)
        out = np.stack([xy[:, 0] * sx + left, xy[:, 1] * sy + top], axis=1)
        if not subpixel:
            out = np.floor(out + 0.5)
        return out.astype(np.float32)


def _leaf_table(splits: int, depth: int) -> np.ndarray:
    """Leaf index reached for every pattern of split outcomes of one complete tree.

    Bit n of the pattern is node n's test (1 = go left). Node n's children are 2n+1 (left)
    and 2n+2 (right), as in dlib; leaves are numbered from 0 after the ``splits`` nodes.
    """
    patterns = np.arange(1 << splits, dtype=np.int64)
    node = np.zeros_like(patterns)
    for _ in range(depth):
        left = (patterns >> node) & 1
        node = 2 * node + 2 - left
    return (node - splits).astype(np.intp)


def _sample(
    pixels: np.ndarray, grey: bool, pix: np.ndarray, size: np.ndarray, width: int
) -> np.ndarray:
    """Grey values (as float32) at integer pixel positions ``pix`` (2, F); 0 outside.

    ``pixels`` is the image as (H * W, C) rows. Colour becomes grey as the integer mean
    (R + G + B) // 3, which is dlib's conversion.
    """
    # Negative positions viewed as unsigned are huge, so one comparison checks both ends.
    inside = (pix.view(np.uintp) < size).all(axis=0)
    flat = pix[1] * width
    flat += pix[0]
    flat *= inside  # outside samples read pixel 0, then count as 0
    values = pixels.take(flat, axis=0)
    if grey:
        return values[:, 0] * inside.astype(np.float32)
    # The channel sum as a float32 product with (1, 1, 1): exact (integers below 766).
    total = values.astype(np.float32) @ _ONES3
    return _THIRDS[total.astype(np.intp)] * inside


# (R + G + B) // 3 for every possible sum, as float32: one gather instead of a divide and a cast.
_THIRDS = (np.arange(3 * 255 + 1) // 3).astype(np.float32)
_ONES3 = np.ones(3, dtype=np.float32)
