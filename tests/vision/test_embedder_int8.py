"""The int8 face embedder: a deterministic, pinned build that stays close to the fp32 one.

The fp32 graph (itself equal to dlib's descriptor, tests/vision/test_embedder.py) is the
oracle: on real LFW chips the int8 embedding must land near it, closer than any two people.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision import models
from devicebio.vision._ort import make_session
from devicebio.vision.align import face_chip
from devicebio.vision.build.resnet import build_resnet_onnx
from devicebio.vision.build.resnet_int8 import (
    ACTIVATION_RANGES,
    RESNET_INT8_ONNX_SHA256,
    build_resnet_int8_onnx,
    quantize_resnet,
)
from devicebio.vision.embedder import Embedder, session_initializers

pytestmark = pytest.mark.device

frm = pytest.importorskip("face_recognition_models")

N_PEOPLE = 12


@pytest.fixture(scope="module")
def dat() -> bytes:
    return Path(frm.face_recognition_model_location()).read_bytes()


@pytest.fixture(scope="module")
def fp32_bytes(dat: bytes) -> bytes:
    return build_resnet_onnx(dat)


@pytest.fixture(scope="module")
def int8_bytes(dat: bytes) -> bytes:
    return build_resnet_int8_onnx(dat)


@pytest.fixture(scope="module")
def chips(lfw_dir: Path, load_lfw, pipeline) -> np.ndarray:
    """Two photos each of a few LFW people, cut the way the pipeline cuts them."""
    people = [
        p
        for p in sorted((lfw_dir / "images").iterdir())
        if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2
    ]
    out = []
    for person in people[:: max(1, len(people) // N_PEOPLE)][:N_PEOPLE]:
        for photo in sorted(person.glob("*.jpg"))[:2]:
            frame = load_lfw(f"{person.name}/{photo.name}")
            faces, _ = pipeline.detect(frame)
            assert faces, photo.name
            landmarks = pipeline._shape.predict(frame, faces[0][1])
            out.append(face_chip(frame, landmarks))
    return np.stack(out)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_build_is_deterministic_and_pinned(dat: bytes, int8_bytes: bytes) -> None:
    assert build_resnet_int8_onnx(dat) == int8_bytes
    digest = hashlib.sha256(int8_bytes).hexdigest()
    assert digest == RESNET_INT8_ONNX_SHA256 == models.MODELS["dlib_resnet_v1_int8"].sha256


def test_graph_is_integer_and_keeps_the_interface(int8_bytes: bytes) -> None:
    import onnx

    model = onnx.load_from_string(int8_bytes)
    ops = [n.op_type for n in model.graph.node]
    # every ReLU folded into a quantiser but the last, which feeds the float tail
    assert ops.count("Conv") == 29 and ops.count("Relu") == 1
    assert ops.count("QuantizeLinear") >= 29
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert all(
        weights[n.input[1].removesuffix("_dq") + "_q"] == onnx.TensorProto.INT8
        for n in model.graph.node
        if n.op_type == "Conv"
    )
    (inp,) = model.graph.input
    assert inp.name == "chips" and inp.type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.needs_lfw
def test_close_to_fp32_on_real_chips(fp32_bytes: bytes, int8_bytes: bytes, chips) -> None:
    fp32 = Embedder(make_session(fp32_bytes, threads=1))
    int8 = Embedder(make_session(int8_bytes, threads=1))
    a, b = _unit(fp32.embed_mirrored(chips)), _unit(int8.embed_mirrored(chips))
    drift = np.linalg.norm(a - b, axis=1)
    # measured on 7,701 LFW photos: median 0.018, max 0.051 (the threshold is ~0.4)
    assert np.median(drift) < 0.04 and drift.max() < 0.08
    assert drift.min() > 0.0  # it really is another computation
    # same people stay closer than different people, as with fp32
    d = np.linalg.norm(b[:, None] - b[None], axis=2)
    same = np.array([d[i, i + 1] for i in range(0, len(b), 2)])
    others = d[np.arange(len(b))[:, None] // 2 != np.arange(len(b))[None] // 2]
    assert np.median(same) < np.median(others)
    # a batch gives what one chip at a time gives
    one = np.stack([int8.embed(c) for c in chips[:3]])
    np.testing.assert_allclose(int8.embed(chips[:3]), one, atol=1e-4)


def test_the_widened_mean_is_the_graphs_own(fp32_bytes: bytes, int8_bytes: bytes) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    ((name, tiled),) = session_initializers().items()
    for data in (fp32_bytes, int8_bytes):
        graph = onnx.load_from_string(data).graph
        assert graph.node[0].op_type == "Sub" and list(graph.node[0].input) == ["chips", name]
        (mean,) = [numpy_helper.to_array(i) for i in graph.initializer if i.name == name]
        assert mean.shape == (3,) and mean.dtype == np.float32
        assert tiled.shape == (150, 150, 3) and (tiled == mean).all()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_the_widened_mean_gives_the_same_bits(
    kind: str, threads: int, fp32_bytes: bytes, int8_bytes: bytes, chips
) -> None:
    data = fp32_bytes if kind == "fp32" else int8_bytes
    pinned = Embedder(make_session(data, threads=threads))
    widened = Embedder(make_session(data, threads=threads, initializers=session_initializers()))
    for batch in (chips[:1], chips[:2], chips):
        np.testing.assert_array_equal(pinned.embed(batch), widened.embed(batch))
        np.testing.assert_array_equal(pinned.embed_mirrored(batch), widened.embed_mirrored(batch))


def test_a_missing_calibrated_range_is_a_typed_error(fp32_bytes: bytes) -> None:
    ranges = dict(ACTIVATION_RANGES)
    ranges.pop(next(iter(ranges)))
    with pytest.raises(DeviceBioError) as info:
        quantize_resnet(fp32_bytes, ranges)
    assert info.value.reason is Reason.MODEL_BUILD_FAILED


@pytest.mark.parametrize("data", [b"", b"not a dlib model", b"\x00" * 400])
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(DeviceBioError) as info:
        build_resnet_int8_onnx(data)
    assert info.value.reason is Reason.MODEL_BUILD_FAILED
