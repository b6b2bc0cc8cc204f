"""The ONNX conversion of dlib's face-recognition ResNet, and the Embedder around it.

dlib itself (dlib-bin) is the oracle: chips are cut by dlib (HOG detector, 5-point shape
predictor, get_face_chip) and dlib's own descriptor of each chip is compared with ours.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._ort import make_session
from devicebio.vision.build.resnet import (
    RESNET_ONNX_SHA256,
    SOURCE_DAT_SHA256,
    build_resnet_onnx,
)
from devicebio.vision.embedder import Embedder

pytestmark = pytest.mark.device

frm = pytest.importorskip("face_recognition_models")

N_LFW_IMAGES = 20
HEADER_BYTES = 352  # everything before the first weight tensor's data in the real file


@pytest.fixture(scope="module")
def dat() -> bytes:
    return Path(frm.face_recognition_model_location()).read_bytes()


@pytest.fixture(scope="module")
def model_bytes(dat: bytes) -> bytes:
    return build_resnet_onnx(dat)


@pytest.fixture(scope="module")
def embedder(model_bytes: bytes) -> Embedder:
    return Embedder(make_session(model_bytes))


@pytest.fixture(scope="module")
def dlib_chips(lfw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """~20 real LFW chips cut by dlib, and dlib's own descriptors of them."""
    dlib = pytest.importorskip("dlib")
    people = sorted(p for p in (lfw_dir / "images").iterdir() if p.is_dir())
    step = max(1, len(people) // N_LFW_IMAGES)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    chips, refs = [], []
    for person in people[::step]:
        image = dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0]))
        faces = detector(image, 1)
        if not faces:
            continue
        chip = dlib.get_face_chip(image, predictor(image, faces[0]), size=150, padding=0.25)
        chips.append(chip)
        refs.append(np.array(net.compute_face_descriptor(chip)))
        if len(chips) == N_LFW_IMAGES:
            break
    assert len(chips) >= 10, "dlib found too few faces to compare against"
    return np.stack(chips), np.stack(refs)


# -- (1) equality with dlib ------------------------------------------------------------------


@pytest.mark.needs_lfw
def test_matches_dlib_on_lfw_chips(
    embedder: Embedder, dlib_chips: tuple[np.ndarray, np.ndarray]
) -> None:
    chips, refs = dlib_chips
    ours = embedder.embed(chips)
    assert ours.dtype == np.float32
    assert ours.shape == refs.shape == (len(chips), 128)
    assert np.abs(ours - refs).max() < 1e-4
    # Unnormalised, like dlib (a unit-norm output would be a conversion bug).
    assert np.all(np.linalg.norm(ours, axis=1) > 1.1)
    # A single chip gives the same vector as in a batch.
    single = embedder.embed(chips[3])
    assert single.shape == (128,)
    assert np.abs(single - refs[3]).max() < 1e-4


@pytest.mark.needs_lfw
def test_mirrored_is_the_mean_of_chip_and_mirror(
    embedder: Embedder, dlib_chips: tuple[np.ndarray, np.ndarray]
) -> None:
    chips = dlib_chips[0][:5]
    mirrored = embedder.embed_mirrored(chips)
    plain = embedder.embed(chips)
    flipped = embedder.embed(np.ascontiguousarray(chips[:, :, ::-1, :]))
    assert mirrored.shape == (5, 128)
    np.testing.assert_allclose(mirrored, (plain + flipped) / 2, atol=1e-5)
    # The mirror is a different input: the average must not simply equal the plain embedding.
    assert np.abs(mirrored - plain).max() > 1e-3
    assert embedder.embed_mirrored(chips[0]).shape == (128,)


# -- (2) determinism and the pinned hash ----------------------------------------------------


def test_build_is_deterministic(dat: bytes, model_bytes: bytes) -> None:
    again = build_resnet_onnx(dat)
    assert again == model_bytes


def test_build_matches_pinned_sha256(dat: bytes, model_bytes: bytes) -> None:
    assert hashlib.sha256(dat).hexdigest() == SOURCE_DAT_SHA256, "the packaged .dat changed"
    assert hashlib.sha256(model_bytes).hexdigest() == RESNET_ONNX_SHA256


def test_graph_interface(model_bytes: bytes) -> None:
    import onnx

    model = onnx.load_from_string(model_bytes)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert (inp.name, dims) == ("chips", ["N", 150, 150, 3])
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (out.name, dims) == ("embeddings", ["N", 128])
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 29
    assert ops.count("Add") == 14  # the residual adds; every affine is folded into its conv
    # dlib counts 5,614,592 parameters, 7,104 of them the gamma/beta of the 29 affine layers
    # (2 x 3,552 channels) that the conversion folds into the convolutions.
    assert _conv_fc_params(model) == 5_614_592 - 7_104


def _conv_fc_params(model: Any) -> int:
    return sum(
        int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.name.startswith(("conv_", "fc_w"))
    )


# -- (3) corrupt model files -----------------------------------------------------------------


def _expect_build_failure(data: bytes) -> None:
    with pytest.raises(DeviceBioError) as info:
        build_resnet_onnx(data)
    assert info.value.reason is Reason.MODEL_BUILD_FAILED


@pytest.mark.parametrize("keep", [0, 1, 2, 17, 100, 300, 352, 10_000, -1_000_000, -1])
def test_truncated_dat_is_a_typed_error(dat: bytes, keep: int) -> None:
    _expect_build_failure(dat[:keep])


def test_trailing_garbage_is_a_typed_error(dat: bytes) -> None:
    _expect_build_failure(dat + b"\x00")


def test_non_finite_weights_are_a_typed_error(dat: bytes) -> None:
    # Eight 0xff bytes cover at least one whole float32, which is then a NaN.
    mid = len(dat) // 2
    _expect_build_failure(dat[:mid] + b"\xff" * 8 + dat[mid + 8 :])


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 64, b"\xff" * 64, b"hello world", b"\x01\x01\x0dloss_metric_2"]
)
def test_garbage_is_a_typed_error(data: bytes) -> None:
    _expect_build_failure(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_are_a_typed_error(data: bytes) -> None:
    _expect_build_failure(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_real_header_with_random_tail_is_a_typed_error(dat: bytes, tail: bytes) -> None:
    # Structure that starts right and then goes wrong, at every depth of the header.
    for cut in (3, 40, 200, 300, 340):
        _expect_build_failure(dat[:cut] + tail)


def test_not_bytes_is_a_typed_error() -> None:
    _expect_build_failure("not bytes")  # type: ignore[arg-type]


def _flip_header_bytes(dat: bytes, positions: range) -> int:
    """Flip each given byte: a typed error or a valid model, nothing else. Returns #errors."""
    failures = 0
    for pos in positions:
        data = dat[:pos] + bytes([dat[pos] ^ 0xFF]) + dat[pos + 1 :]
        try:
            build_resnet_onnx(data)
        except DeviceBioError as exc:
            assert exc.reason is Reason.MODEL_BUILD_FAILED
            failures += 1
    return failures


def test_header_byte_corruption_fails_cleanly(dat: bytes) -> None:
    positions = range(0, HEADER_BYTES, 7)
    # Almost every header byte is structure; only float mantissas (training settings, the
    # input mean) can change without breaking the parse.
    assert _flip_header_bytes(dat, positions) > len(positions) * 3 // 4


@pytest.mark.slow
def test_every_header_byte_corruption_fails_cleanly(dat: bytes) -> None:
    assert _flip_header_bytes(dat, range(HEADER_BYTES)) > HEADER_BYTES * 3 // 4


# -- (4) hostile inputs to Embedder ---------------------------------------------------------


GOOD = np.zeros((150, 150, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "chips",
    [
        GOOD.astype(np.float32),
        GOOD.astype(np.int64),
        GOOD.astype(np.uint16),
        GOOD.astype(bool),
        np.zeros((150, 150, 4), dtype=np.uint8),
        np.zeros((2, 150, 150, 4), dtype=np.uint8),
        np.zeros((150, 150), dtype=np.uint8),
        np.zeros((149, 150, 3), dtype=np.uint8),
        np.zeros((1, 150, 151, 3), dtype=np.uint8),
        np.zeros((3, 150, 150), dtype=np.uint8),
        np.zeros((0, 150, 150, 3), dtype=np.uint8),
        np.zeros((0,), dtype=np.uint8),
        np.zeros((1, 1, 150, 150, 3), dtype=np.uint8),
        np.uint8(7),
        GOOD.tolist(),
        None,
        b"\x00" * (150 * 150 * 3),
    ],
    ids=lambda c: f"{type(c).__name__}{getattr(c, 'shape', '')}{getattr(c, 'dtype', '')}",
)
def test_hostile_chips_are_bad_image(embedder: Embedder, chips: Any) -> None:
    for method in (embedder.embed, embedder.embed_mirrored):
        with pytest.raises(DeviceBioError) as info:
            method(chips)
        assert info.value.reason is Reason.BAD_IMAGE


def test_batches_larger_than_one_run(embedder: Embedder) -> None:
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, size=(35, 150, 150, 3), dtype=np.uint8)
    out = embedder.embed(chips)
    assert out.shape == (35, 128) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out[33], embedder.embed(chips[33]), atol=1e-5)
    assert embedder.embed_mirrored(chips).shape == (35, 128)


def test_memory_layout_does_not_matter(embedder: Embedder) -> None:
    rng = np.random.default_rng(1)
    chips = rng.integers(0, 256, size=(2, 150, 150, 3), dtype=np.uint8)
    want = embedder.embed(chips)
    np.testing.assert_allclose(embedder.embed(np.asfortranarray(chips[1])), want[1], atol=1e-5)
    flipped = chips[:, :, ::-1, :]  # a strided view, not a copy
    np.testing.assert_allclose(
        embedder.embed(flipped), embedder.embed(np.ascontiguousarray(flipped)), atol=1e-5
    )


def test_embedder_rejects_a_foreign_session() -> None:
    with pytest.raises(DeviceBioError) as info:
        Embedder(object())
    assert info.value.reason is Reason.INVALID_ARGUMENT


def test_make_session_errors() -> None:
    with pytest.raises(DeviceBioError) as info:
        make_session(b"not an onnx model")
    assert info.value.reason is Reason.MODEL_BUILD_FAILED
    with pytest.raises(DeviceBioError) as info:
        make_session(b"", threads=0)
    assert info.value.reason is Reason.INVALID_ARGUMENT
    with pytest.raises(DeviceBioError) as info:
        make_session(b"", providers=["NoSuchExecutionProvider"])
    assert info.value.reason is Reason.DEPENDENCY_MISSING
