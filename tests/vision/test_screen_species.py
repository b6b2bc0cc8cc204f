"""The screen-replay species of ``devicebio eval liveness`` (issue 13): the simulated recapture,
the passive PAD's verdict on it, and a CI-sized run of both species with fixed seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devicebio.evaluation import liveness as ev
from devicebio.evaluation.liveness.screen import ScreenRecapture

VIDEO = "selfie_headturn_lrud_tvl.mp4"


def _frame(video_dir: Path, index: int = 0) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(video_dir / VIDEO))
    for _ in range(index + 1):
        ok, bgr = cap.read()
        assert ok
    cap.release()
    h, w = bgr.shape[:2]
    if w > 640:
        bgr = cv2.resize(bgr, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _saturation(rgb: np.ndarray) -> float:
    x = rgb.astype(np.float64)
    return float(np.mean(x.max(axis=2) - x.min(axis=2)))


def test_the_simulated_recapture_is_deterministic_and_screen_like() -> None:
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    a = ScreenRecapture(np.random.default_rng(3)).render(frame, 0.5)
    b = ScreenRecapture(np.random.default_rng(3)).render(frame, 0.5)
    c = ScreenRecapture(np.random.default_rng(4)).render(frame, 0.5)
    assert a.shape == frame.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seed, same pixels: a seeded evaluation is reproducible
    assert not np.array_equal(a, c)
    # a panel never shows black (raised black level) and compresses the gamut
    assert int(a.min()) > 0 or float(np.mean(a < 5)) < 0.01
    assert _saturation(a) < _saturation(frame)


def test_the_passive_pad_passes_the_genuine_frame_and_refuses_its_recapture(
    video_dir: Path, pipeline
) -> None:
    """The product's detector on one real frame and on the same frame through simulated
    screens (three fixed seeds): the verdicts the steered species relies on."""
    from devicebio.liveness.passive import DEFAULT_THRESHOLD
    from devicebio.vision.pad import PassivePad

    pad = PassivePad(threads=1)
    genuine = _frame(video_dir)

    def fused(rgb: np.ndarray) -> float:
        found, _ = pipeline.detect(rgb)
        assert found
        return pad.score(rgb, max(found, key=lambda d: d[0].width)[0]).fused

    assert fused(genuine) >= DEFAULT_THRESHOLD
    for seed in (0, 1, 2):
        shown = ScreenRecapture(np.random.default_rng(seed)).render(genuine, 0.0)
        assert fused(shown) < DEFAULT_THRESHOLD, seed


@pytest.mark.slow
def test_ci_sized_screen_species(video_dir: Path, lfw_dir: Path, pipeline) -> None:
    """Both screen species through the product's decision (ActiveLiveness with its default
    PAD), seed 7: none accepted, each refusal names the check that refused it."""
    species = ("screen_replay", "steered_screen_replay")
    report = ev.evaluate(
        video_dir, lfw_dir, sessions=0, attacks=2, seed=7, species=species, progress=False,
        pipeline=pipeline,
    )  # fmt: skip
    assert report["pad"] == ["minifasnet"]
    for s in species:
        assert report["sessions"][s] == 2 and report["accepted"][s] == 0, report["reasons"][s]
        assert report["iapmr_ci"][s]["errors"] == 0 and report["iapmr_ci"][s]["trials"] == 2
        assert set(report["reasons"][s]) <= {str(r) for r in _failures()}, report["reasons"][s]


def _failures() -> list[object]:
    from devicebio.liveness import LivenessFailure

    return [*LivenessFailure, "identity_mismatch"]
