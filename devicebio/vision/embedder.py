"""Face embeddings: dlib's face-recognition ResNet, converted to ONNX, on onnxruntime.

Input: aligned 150x150 RGB chips as dlib's ``get_face_chip(img, shape, 150, 0.25)`` makes them.
Output: 128-D float32 vectors, *not* unit-normalised (norms are around 1.4), equal to dlib's
``compute_face_descriptor`` to within ~1e-6 per component with the fp32 graph; the int8 graph
(``build.resnet_int8``, the pipeline's default) is ~2.3x faster and lands within ~0.02 of it
(median distance of unit-length embeddings on LFW; the decision threshold is ~0.4).

Compare embeddings with the **Euclidean** distance (not cosine). dlib's rule is: distance
< 0.6 means the same person; a lower threshold is stricter (fewer false accepts, more false
rejects).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason

CHIP_SIZE = 150
EMBEDDING_DIM = 128
#: dlib's published decision rule for this model: Euclidean distance below this = same person.
DLIB_DISTANCE_THRESHOLD = 0.6

_INPUT = "chips"
_OUTPUT = "embeddings"
# dlib's per-channel input mean (its input_rgb_image_sized layer), the (3,) float32 constant
# both pinned ResNet graphs (fp32 and int8) subtract first (tests/vision/test_embedder_int8.py).
_MEAN_NAME = "mean_rgb_1"
_MEAN_RGB = np.array([122.782, 117.001, 104.298], dtype=np.float32)
# Rows per onnxruntime call: bounds the activation memory (~0.7 MB per row at the first
# layers) however many chips a caller hands in.
_MAX_ROWS = 32


def session_initializers() -> dict[str, np.ndarray]:
    """Constants to give ``make_session`` for a pinned ResNet graph: same numbers, faster.

    The graph's first op subtracts the (3,) mean from the (N, 150, 150, 3) chips, and
    onnxruntime broadcasts so short a constant one span of 3 values at a time: ~1 ms per chip
    on a 2 GHz core, more than all its other element-wise ops together. The mean tiled to
    (150, 150, 3) is subtracted in whole rows instead; every element still gets the same
    float32 subtraction of the same value, so the embeddings are bit-identical (tested). The
    pinned file, its sha256 and the model id stay as they are.
    """
    return {_MEAN_NAME: np.ascontiguousarray(np.broadcast_to(_MEAN_RGB, (CHIP_SIZE, CHIP_SIZE, 3)))}


def _as_batch(chips: Any) -> tuple[np.ndarray, bool]:
    """Validate ``chips``; return them as (N, 150, 150, 3) uint8 and whether one was given."""
    if not isinstance(chips, np.ndarray):
        raise DeviceBioError(Reason.BAD_IMAGE, "chips must be a numpy array")
    if chips.dtype != np.uint8:
        raise DeviceBioError(Reason.BAD_IMAGE, f"chips must be uint8 RGB, got {chips.dtype}")
    chip = (CHIP_SIZE, CHIP_SIZE, 3)
    if chips.ndim == 3 and chips.shape == chip:
        return chips[None], True
    if chips.ndim == 4 and chips.shape[1:] == chip and chips.shape[0] > 0:
        return chips, False
    raise DeviceBioError(
        Reason.BAD_IMAGE,
        f"chips must have shape (150, 150, 3) or (N, 150, 150, 3) with N >= 1, got {chips.shape}",
    )


class Embedder:
    """Turns aligned face chips into 128-D embeddings.

    ``session`` is an ``onnxruntime.InferenceSession`` of the graph made by
    ``devicebio.vision.build.resnet.build_resnet_onnx`` or its int8 form
    ``devicebio.vision.build.resnet_int8.build_resnet_int8_onnx`` (see ``devicebio.vision._ort
    .make_session``); creating it is left to the caller so that one session, with its thread
    settings, can be shared.

    Distances between embeddings are Euclidean; dlib's rule is < 0.6 = same person.
    """

    dim = EMBEDDING_DIM
    chip_size = CHIP_SIZE

    def __init__(self, session: Any) -> None:
        try:
            inputs = [(i.name, list(i.shape)) for i in session.get_inputs()]
            outputs = [o.name for o in session.get_outputs()]
        except Exception as exc:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, "session must be an onnxruntime InferenceSession"
            ) from exc
        if len(inputs) != 1 or inputs[0][0] != _INPUT or inputs[0][1][1:] != [150, 150, 3]:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, "session is not the face embedder (input 'chips')"
            )
        if outputs != [_OUTPUT]:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, "session is not the face embedder (output 'embeddings')"
            )
        self._session = session

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            out = self._session.run([_OUTPUT], {_INPUT: batch})[0]
        except Exception as exc:  # onnxruntime's own exception types are not ours
            raise DeviceBioError(
                Reason.MODEL_BUILD_FAILED,
                f"the embedder model failed to run ({type(exc).__name__})",
            ) from exc
        result = np.asarray(out, dtype=np.float32)
        if result.shape != (batch.shape[0], EMBEDDING_DIM):
            raise DeviceBioError(Reason.MODEL_BUILD_FAILED, "the embedder gave a wrong shape")
        return result

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of ``chips``: (150, 150, 3) -> (128,); (N, 150, 150, 3) -> (N, 128).

        ``chips`` must be uint8 RGB aligned like ``dlib.get_face_chip(..., 150, 0.25)``;
        anything else raises ``DeviceBioError(Reason.BAD_IMAGE)``.
        """
        batch, single = _as_batch(chips)
        parts = [
            self._run(np.ascontiguousarray(batch[i : i + _MAX_ROWS], dtype=np.float32))
            for i in range(0, batch.shape[0], _MAX_ROWS)
        ]
        result = np.concatenate(parts)
        return result[0] if single else result

    def embed_mirrored(self, chips: np.ndarray) -> np.ndarray:
        """Like :meth:`embed`, but each embedding is the mean of the chip's and its mirror's.

        A chip and its horizontal mirror go through the network in one batch. Averaging the
        two is a cheap, well-known accuracy gain; use it on both sides of a comparison (the
        enrolled template and the probe), since mirrored and plain embeddings differ slightly.
        """
        batch, single = _as_batch(chips)
        half = _MAX_ROWS // 2
        parts = []
        for i in range(0, batch.shape[0], half):
            part = batch[i : i + half]
            both = np.concatenate([part, part[:, :, ::-1, :]], dtype=np.float32)
            out = self._run(both)
            n = part.shape[0]
            parts.append((out[:n] + out[n:]) * np.float32(0.5))
        result = np.concatenate(parts)
        return result[0] if single else result
