"""The ONNX MMOD detector against dlib's own ``cnn_face_detection_model_v1`` (the oracle)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.build.mmod import ONNX_SHA256, build_mmod_onnx, parse_mmod_config
from devicebio.vision.detector_mmod import MmodDetector, to_dlib_box
from devicebio.vision.formats import MMOD_METADATA_KEY, MmodConfig
from devicebio.vision.types import Detection

ort = pytest.importorskip("onnxruntime")
frm = pytest.importorskip("face_recognition_models")
cv2 = pytest.importorskip("cv2")

N_LFW = 30


@pytest.fixture(scope="module")
def dat() -> bytes:
    return Path(frm.cnn_face_detector_model_location()).read_bytes()


@pytest.fixture(scope="module")
def model(dat: bytes) -> bytes:
    return build_mmod_onnx(dat)


@pytest.fixture(scope="module")
def detector(model: bytes) -> MmodDetector:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return MmodDetector(session)


@pytest.fixture(scope="module")
def oracle():  # type: ignore[no-untyped-def]
    dlib = pytest.importorskip("dlib")
    return dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())


def _load(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _compare(ours: list[Detection], theirs: list) -> tuple[int, list[float], float]:  # type: ignore[type-arg]
    """Assert same count, pair by order (both best-first), IoU >= 0.9; return figures."""
    assert len(ours) == len(theirs), (ours, theirs)
    ious, max_diff = [], 0.0
    for o, t in zip(ours, theirs, strict=True):
        r = t.rect
        # dlib's rectangles are inclusive; ours are exclusive on the right/bottom
        ref = (r.left(), r.top(), r.right() + 1, r.bottom() + 1)
        ious.append(_iou(o.box, ref))
        assert ious[-1] >= 0.9, (o, ref)
        max_diff = max(max_diff, abs(o.score - t.confidence))
    assert max_diff < 1e-3
    return len(ours), ious, max_diff


def _lfw_sample(lfw_dir: Path, n: int) -> list[Path]:
    files = sorted((lfw_dir / "images").glob("*/*.jpg"))
    if len(files) < n:
        pytest.skip("not enough LFW images")
    step = len(files) // n
    return files[::step][:n]


# --- agreement with dlib ------------------------------------------------------------------


@pytest.mark.needs_lfw
def test_matches_dlib_on_lfw(lfw_dir: Path, detector: MmodDetector, oracle) -> None:  # type: ignore[no-untyped-def]
    matched, ious, max_diff, exact = 0, [], 0.0, 0
    for path in _lfw_sample(lfw_dir, N_LFW):
        img = _load(path)
        ours = detector.detect(img)
        theirs = oracle(img, 0)
        n, pair_ious, diff = _compare(ours, theirs)
        matched += n
        ious += pair_ious
        max_diff = max(max_diff, diff)
        exact += sum(
            to_dlib_box(o) == (t.rect.left(), t.rect.top(), t.rect.right(), t.rect.bottom())
            for o, t in zip(ours, theirs, strict=True)
        )
    assert matched >= N_LFW - 3  # LFW is one centred face per image; dlib misses a few
    assert float(np.mean(ious)) > 0.99
    # the tiling is reproduced exactly, so boxes are identical, not just close
    assert exact == matched
    assert max_diff < 1e-4


@pytest.mark.needs_lfw
def test_matches_dlib_on_a_collage_with_several_faces(
    lfw_dir: Path,
    detector: MmodDetector,
    oracle,  # type: ignore[no-untyped-def]
) -> None:
    # a non-square frame with several faces exercises the second pyramid column and NMS
    files = _lfw_sample(lfw_dir, 60)[31:37]
    tiles = [cv2.resize(_load(p), (160, 160)) for p in files]
    img = np.ascontiguousarray(np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])]))
    ours = detector.detect(img)
    n, _, _ = _compare(ours, oracle(img, 0))
    assert n >= 4
    scores = [d.score for d in ours]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.needs_lfw
def test_upsample_matches_dlib(lfw_dir: Path, detector: MmodDetector, oracle) -> None:  # type: ignore[no-untyped-def]
    # a face too small for the 80 px window is found only after dlib's pyramid_up
    img = cv2.resize(_load(_lfw_sample(lfw_dir, 5)[2]), (110, 110), interpolation=cv2.INTER_AREA)
    ours = detector.detect(img, upsample=1)
    n, _, _ = _compare(ours, oracle(img, 1))
    assert n >= 1


def test_blank_image_has_no_faces(detector: MmodDetector) -> None:
    assert detector.detect(np.full((64, 96, 3), 128, np.uint8)) == []


# --- the build ----------------------------------------------------------------------------


def test_build_is_deterministic_and_pinned(dat: bytes, model: bytes) -> None:
    again = build_mmod_onnx(dat)
    assert again == model
    assert hashlib.sha256(model).hexdigest() == ONNX_SHA256


def test_settings_come_from_the_dat(dat: bytes, model: bytes) -> None:
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(model).metadata_props}
    cfg = MmodConfig.from_json(props[MMOD_METADATA_KEY])
    assert cfg == parse_mmod_config(dat)
    assert cfg.windows == ((80, 80, ""),)
    assert cfg.nms_iou == pytest.approx(0.3383, abs=1e-4)
    assert cfg.nms_covered == 1.0
    assert cfg.score_threshold == 0.0
    assert (cfg.pyramid_down, cfg.pyramid_padding, cfg.pyramid_outer_padding) == (6, 10, 11)
    assert cfg.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert (cfg.map_scale, cfg.map_offset_x, cfg.map_offset_y) == (8, 14, 14)


@pytest.mark.parametrize("cut", [0, 1, 5, 13, 40, 80, 120, 200, 1000, 100_000, -500, -1])
def test_truncated_dat_is_a_typed_error(dat: bytes, cut: int) -> None:
    with pytest.raises(DeviceBioError) as err:
        build_mmod_onnx(dat[:cut])
    assert err.value.reason is Reason.MODEL_BUILD_FAILED


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (1, 0x05),  # loss-layer version
        (4, ord("X")),  # "loss_mmod_" tag
        (15, 0x02),  # mmod_options version -> reads a window list that is not there
        (17, 0x00),  # detection window width 80 -> 0
        (91, 0x02),  # innermost layer wrapper version 3 -> 2: the layer chain never ends
        (94, ord("Y")),  # input layer name
        (141, ord("7")),  # "con_4" -> "con_7"
    ],
)
def test_corrupted_dat_is_a_typed_error(dat: bytes, offset: int, value: int) -> None:
    bad = bytearray(dat)
    assert bad[offset] != value
    bad[offset] = value
    with pytest.raises(DeviceBioError) as err:
        build_mmod_onnx(bytes(bad))
    assert err.value.reason is Reason.MODEL_BUILD_FAILED


def test_random_byte_flips_never_escape_untyped(dat: bytes) -> None:
    rng = np.random.default_rng(1234)
    # the structural part of the file: options, wrappers, input layer and first layer header
    for offset in rng.integers(0, 400, size=60):
        bad = bytearray(dat)
        bad[int(offset)] ^= int(rng.integers(1, 256))
        try:
            build_mmod_onnx(bytes(bad))
        except DeviceBioError as exc:
            assert exc.reason is Reason.MODEL_BUILD_FAILED


def test_non_bytes_and_garbage_are_typed_errors() -> None:
    for junk in (b"", b"\x00" * 64, b"not a model", "text"):
        with pytest.raises(DeviceBioError) as err:
            build_mmod_onnx(junk)  # type: ignore[arg-type]
        assert err.value.reason is Reason.MODEL_BUILD_FAILED


def test_session_without_metadata_is_refused(model: bytes) -> None:
    import onnx

    proto = onnx.load_from_string(model)
    del proto.metadata_props[:]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(DeviceBioError) as err:
        MmodDetector(session)
    assert err.value.reason is Reason.MODEL_BUILD_FAILED


# --- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((100, 100, 3), np.float32),
        np.full((100, 100, 3), np.nan, np.float64),
        np.zeros((100, 100, 3), np.uint16),
        np.zeros((100, 100, 3), np.int8),
        np.zeros((100, 100, 3), bool),
        np.zeros((100, 100), np.uint8),
        np.zeros((100, 100, 4), np.uint8),
        np.zeros((100, 100, 1), np.uint8),
        np.zeros((1, 100, 100, 3), np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((15, 100, 3), np.uint8),
        np.zeros((100, 15, 3), np.uint8),
        np.zeros((8193, 16, 3), np.uint8),
        [[[0, 0, 0]] * 20] * 20,
        None,
    ],
    ids=lambda x: f"{getattr(x, 'dtype', type(x).__name__)}{getattr(x, 'shape', '')}",
)
def test_bad_images_are_rejected(detector: MmodDetector, image: object) -> None:
    with pytest.raises(DeviceBioError) as err:
        detector.detect(image)  # type: ignore[arg-type]
    assert err.value.reason is Reason.BAD_IMAGE


@pytest.mark.parametrize("upsample", [-1, 4, True, 1.0, "1", None])
def test_bad_upsample_is_rejected(detector: MmodDetector, upsample: object) -> None:
    with pytest.raises(DeviceBioError) as err:
        detector.detect(np.zeros((32, 32, 3), np.uint8), upsample=upsample)  # type: ignore[arg-type]
    assert err.value.reason is Reason.INVALID_ARGUMENT


def test_upsample_that_would_exceed_the_size_limit_is_rejected(detector: MmodDetector) -> None:
    with pytest.raises(DeviceBioError) as err:
        detector.detect(np.zeros((16, 5000, 3), np.uint8), upsample=1)
    assert err.value.reason is Reason.INVALID_ARGUMENT


def test_strided_views_are_accepted(detector: MmodDetector) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    view = img[:, ::-1]
    assert detector.detect(view) == detector.detect(np.ascontiguousarray(view))
