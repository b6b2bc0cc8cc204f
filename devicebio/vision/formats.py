"""The formats of the built model files: what a converter writes and the runtime reads.

They live on the runtime side so that authentication never imports the offline converters in
:mod:`devicebio.vision.build` (which need onnx and read dlib's ``.dat`` files); a converter
imports its format from here, so the writer and the reader cannot drift apart.

* MMOD detector (ONNX): the tensor names and the JSON settings stored in the model's
  ``metadata_props`` under :data:`MMOD_METADATA_KEY` (:class:`MmodConfig`).
* 5-point shape predictor: a small self-describing binary file that
  :mod:`devicebio.vision.landmarks` maps straight onto numpy arrays (no parsing at load
  time)::

    header   "DBSHAPE5" | uint32 LE: format version, parts, cascades, trees, splits, features
    float32  mean shape        [2 * parts]
    float32  split thresholds  [cascades, trees, splits]
    float32  leaf values       [cascades, trees, splits + 1, 2 * parts]
    float32  pixel offsets     [cascades, features, 2]
    uint16   split features    [cascades, trees, splits, 2]
    uint16   pixel anchors     [cascades, features]

  All little-endian, C order, no padding, no timestamps.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason

# --------------------------------------------------------------------------------------------
# MMOD detector

MMOD_INPUT_NAME = "image"
MMOD_OUTPUT_NAME = "scores"
MMOD_METADATA_KEY = "devicebio.mmod"
MMOD_METADATA_VERSION = 1
# A sanity bound on sizes, so a corrupted count cannot make us allocate gigabytes.
MMOD_MAX_DIM = 4096


@dataclass(frozen=True)
class MmodConfig:
    """Everything the runtime needs from the .dat besides the weights."""

    # (width, height, label) of each detection window, in output-channel order
    windows: tuple[tuple[int, int, str], ...]
    # dlib's test_box_overlap for NMS: boxes overlap when intersection / bounding-box area >
    # nms_iou, or intersection covers more than nms_covered of either box
    nms_iou: float
    nms_covered: float
    score_threshold: float
    pyramid_down: int
    pyramid_padding: int
    pyramid_outer_padding: int
    mean_rgb: tuple[float, float, float]
    # output cell (c, r) -> input-tensor point (map_scale * c + map_offset_x,
    # map_scale * r + map_offset_y): dlib's output_tensor_to_input_tensor for this chain
    map_scale: int
    map_offset_x: int
    map_offset_y: int
    # kept for reference; the detector does not use them
    loss_per_false_alarm: float
    loss_per_missed_target: float
    truth_match_iou: float

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["version"] = MMOD_METADATA_VERSION
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> MmodConfig:
        """Parse the metadata written by the MMOD converter (MODEL_BUILD_FAILED if bad)."""
        try:
            data = json.loads(text)
            if data.pop("version") != MMOD_METADATA_VERSION:
                raise ValueError("metadata version")
            windows = tuple((int(w), int(h), str(label)) for w, h, label in data.pop("windows"))
            mean = tuple(float(v) for v in data.pop("mean_rgb"))
            if len(mean) != 3 or not windows:
                raise ValueError("shape")
            cfg = cls(windows=windows, mean_rgb=(mean[0], mean[1], mean[2]), **data)
            cfg.check()
            return cfg
        except DeviceBioError:
            raise
        except Exception as exc:  # any malformed metadata is one typed error
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED, f"MMOD metadata unreadable ({type(exc).__name__})"
            ) from exc

    def check(self) -> None:
        ok = (
            all(0 < w <= MMOD_MAX_DIM and 0 < h <= MMOD_MAX_DIM for w, h, _ in self.windows)
            and 0.0 <= self.nms_iou <= 1.0
            and 0.0 <= self.nms_covered <= 1.0
            and np.isfinite(self.score_threshold)
            and self.pyramid_down >= 2
            and 0 <= self.pyramid_padding <= MMOD_MAX_DIM
            and 0 <= self.pyramid_outer_padding <= MMOD_MAX_DIM
            and all(np.isfinite(v) for v in self.mean_rgb)
            and self.map_scale >= 1
        )
        if not ok:
            raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "MMOD settings out of range")


# --------------------------------------------------------------------------------------------
# 5-point shape predictor

SHAPE5_MAGIC = b"DBSHAPE5"
SHAPE5_FORMAT_VERSION = 1
SHAPE5_HEADER = struct.Struct("<8s6I")
# Generous bounds: the shipped model has 5 parts, 15 levels, 500 trees of depth 4, 800
# features. They only stop a hostile file from making us allocate absurd amounts.
SHAPE5_MAX_PARTS = 256
SHAPE5_MAX_CASCADES = 64
SHAPE5_MAX_TREES = 10_000
SHAPE5_MAX_DEPTH = 12
SHAPE5_MAX_FEATURES = 65_535


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


def _shape5_layout(dims: tuple[int, int, int, int, int]) -> list[tuple[str, str, tuple[int, ...]]]:
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


def serialize_shape5(arrays: Shape5Arrays) -> bytes:
    """The model file of ``arrays`` (what the converter writes; MODEL_BUILD_FAILED if misshapen)."""
    dims = arrays.dims
    chunks = [SHAPE5_HEADER.pack(SHAPE5_MAGIC, SHAPE5_FORMAT_VERSION, *dims)]
    for name, dtype, shape in _shape5_layout(dims):
        arr = np.ascontiguousarray(getattr(arrays, name), dtype=dtype)
        if arr.shape != shape:
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED,
                f"shape predictor: {name} has shape {arr.shape}, expected {shape}",
            )
        chunks.append(arr.tobytes())
    return b"".join(chunks)


def deserialize_shape5(model: bytes) -> Shape5Arrays:
    """Map a built model file onto arrays (read-only views into ``model``; no copy).

    Raises ``DeviceBioError(Reason.MALFORMED_DATA)`` if the bytes are not such a file.
    """

    def bad(what: str) -> DeviceBioError:
        return DeviceBioError(Reason.MALFORMED_DATA, f"shape predictor model: {what}")

    if not isinstance(model, bytes) or len(model) < SHAPE5_HEADER.size:
        raise bad("too short")
    magic, version, *rest = SHAPE5_HEADER.unpack_from(model)
    if magic != SHAPE5_MAGIC or version != SHAPE5_FORMAT_VERSION:
        raise bad("not a devicebio shape predictor file")
    parts, c, t, s, f = rest
    if not (
        0 < parts <= SHAPE5_MAX_PARTS
        and 0 < c <= SHAPE5_MAX_CASCADES
        and 0 < t <= SHAPE5_MAX_TREES
        and 0 < s < 2**SHAPE5_MAX_DEPTH
        and (s + 1) & s == 0
        and 0 < f <= SHAPE5_MAX_FEATURES
    ):
        raise bad("dimensions out of range")
    views: dict[str, np.ndarray] = {}
    pos = SHAPE5_HEADER.size
    for name, dtype, shape in _shape5_layout((parts, c, t, s, f)):
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
