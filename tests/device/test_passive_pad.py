"""The passive PAD plugged into liveness: real frames, real models, verdicts without scores."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.liveness.passive import PassivePadDetector
from devicebio.protocol import LIVENESS_KIND, LIVENESS_KIND_PASSIVE
from devicebio.sources import Frame

cv2 = pytest.importorskip("cv2", reason="the passive PAD needs the [device] extra")


def _clip(path: Path, every: int, limit: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while len(out) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % every == 0:
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    assert out, path
    return out


def _session(pipeline, rgbs: list[np.ndarray]) -> tuple[list[Frame], list]:
    frames = [Frame(rgb=rgb, timestamp=i / 30.0) for i, rgb in enumerate(rgbs)]
    faces = []
    for f in frames:
        found, _ = pipeline.detect(f.rgb)
        faces.append(found[0][0] if found else None)
    return frames, faces


@pytest.fixture(scope="module")
def detector() -> PassivePadDetector:
    return PassivePadDetector(threads=1)


@pytest.mark.needs_video
@pytest.mark.parametrize(
    "clip", ["webcam_talk_clm_cap12.mp4", "selfie_headturn_lrud_tvl.mp4", "grid_swiz3n.mpg"]
)
def test_genuine_footage_passes(detector, pipeline, video_dir: Path, clip: str) -> None:
    frames, faces = _session(pipeline, _clip(video_dir / clip, every=6, limit=24))
    verdict = detector.assess(frames, faces)
    assert verdict.passed, clip
    assert verdict.kind == "passive" and verdict.name == "minifasnet"
    # the detail says which models ran on how many frames, and carries no score
    assert all(m in verdict.detail for m in detector.model_ids)
    assert not re.search(r"\d\.\d", verdict.detail.split(";", 1)[1])


def test_screen_replays_are_refused(detector, pipeline) -> None:
    folder = Path(os.environ.get("DEVICEBIO_RECAPTURES", "/work/data/recaptures"))
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(
            f"no recaptures at {folder} (set DEVICEBIO_RECAPTURES; docs/data-recaptures.md)"
        )
    with manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == "screen_replay"]
    videos = [r for r in rows if not r["file"].endswith((".jpg", ".png"))]
    assert videos
    for row in videos:
        frames, faces = _session(pipeline, _clip(folder / row["file"], every=6, limit=24))
        verdict = detector.assess(frames, faces)
        assert not verdict.passed, row["file"]


def test_too_few_faces_fail_closed(detector) -> None:
    frames = [Frame(rgb=np.zeros((120, 160, 3), np.uint8), timestamp=i / 30) for i in range(8)]
    verdict = detector.assess(frames, [None] * 8)
    assert not verdict.passed and "too few" in verdict.detail


def test_arguments_are_checked() -> None:
    class Stub:
        model_ids = ("m@0",)

    for bad in (0.0, 1.0, -1.0):
        with pytest.raises(DeviceBioError) as err:
            PassivePadDetector(Stub(), threshold=bad)
        assert err.value.reason is Reason.INVALID_ARGUMENT
    with pytest.raises(DeviceBioError):
        PassivePadDetector(Stub(), min_frames=5, max_frames=4)


@pytest.mark.needs_video
def test_a_genuine_session_passes_with_the_passive_pad(pipeline, video_dir: Path) -> None:
    # the spliced live session of test_liveness.py, through ActiveLiveness with this detector
    from test_liveness import VIDEO as SESSION_VIDEO
    from test_liveness import WANTED, Prompt, _challenge_with, _stream, genuine_session

    from devicebio.liveness import ActiveLiveness
    from devicebio.protocol import liveness_plan

    cap = cv2.VideoCapture(str(video_dir / SESSION_VIDEO))
    frames: dict[int, np.ndarray] = {}
    wanted = set(WANTED)
    for i in range(WANTED[-1] + 1):
        ok, bgr = cap.read()
        assert ok
        if i in wanted:
            frames[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cap.release()
    challenge = _challenge_with(Prompt.TURN_LEFT)
    detector = PassivePadDetector(threads=1)
    result = ActiveLiveness(pipeline, detectors=[detector]).run(
        _stream(genuine_session(frames, liveness_plan(challenge))).frames(), challenge
    )
    assert result.passed, result.reason
    (verdict,) = result.pad
    assert verdict.passed and verdict.name == "minifasnet" and verdict.kind == "passive"
    assert verdict.detail.endswith(f"; {detector.max_frames} frames")
    assert result.claim().kind == LIVENESS_KIND_PASSIVE


def test_the_product_default_is_the_passive_pad_when_its_models_are_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ActiveLiveness runs default_detectors() unless told otherwise: the MiniFASNet pair when
    its files are there; none when they are absent (the claim then says active-only); a file
    that is there but not the pinned one is an error, never a quiet downgrade."""
    import shutil

    from devicebio.liveness.passive import default_detectors
    from devicebio.vision import pad

    shipped = pad.PAD_DIR
    (found,) = default_detectors(threads=1)
    assert isinstance(found, PassivePadDetector)
    monkeypatch.setattr(pad, "PAD_DIR", tmp_path)
    assert default_detectors(threads=1) == ()
    for source in pad.PAD_MODELS.values():
        shutil.copy(shipped / f"{source.name}.onnx", tmp_path)
    assert len(default_detectors(threads=1)) == 1
    name = next(iter(pad.PAD_MODELS.values())).name
    (tmp_path / f"{name}.onnx").write_bytes(b"not the pinned model")
    with pytest.raises(DeviceBioError) as err:
        default_detectors(threads=1)
    assert err.value.reason is Reason.MODEL_HASH_MISMATCH


def test_the_claim_kind_names_the_checks_that_ran() -> None:
    from devicebio.liveness import LivenessResult, PadVerdict

    def result(*verdicts: PadVerdict) -> LivenessResult:
        return LivenessResult(True, None, (), b"\x00" * 32, 10, 1.0, np.zeros((0, 128)), verdicts)

    assert result().claim().kind == LIVENESS_KIND
    assert result(PadVerdict("ir-sensor", True, "hardware")).claim().kind == LIVENESS_KIND
    assert result(PadVerdict("minifasnet", True, "passive")).claim().kind == LIVENESS_KIND_PASSIVE
