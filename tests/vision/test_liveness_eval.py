"""``devicebio eval liveness``: the annotation file, the simulated presentations, a CI-sized run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from devicebio.errors import DeviceBioError
from devicebio.evaluation import liveness as ev


def test_annotation_is_well_formed_and_references_no_copied_video() -> None:
    ann = ev.load_annotation()
    assert ann.segments
    for seg in ann.segments:
        assert seg.label in ev.LABELS
        assert seg.video in ann.videos
        assert all(0 <= a < b for a, b in seg.ranges)
    # the annotation names files; the videos themselves never sit in the repository
    repo = Path(__file__).resolve().parents[2]
    for name in ann.videos:
        assert not list(repo.rglob(name)), name


def test_annotation_matches_the_video_folder(video_dir: Path) -> None:
    import cv2

    ann = ev.load_annotation()
    assert ev.check_annotation(ann, video_dir) == []
    for name, info in ann.videos.items():
        cap = cv2.VideoCapture(str(video_dir / name))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        # decode the file: container frame counts are unreliable (variable frame rate)
        assert n == info["frames"], name


def test_malformed_annotation_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "s.json"
    bad.write_text(
        json.dumps(
            {
                "videos": {"a.mp4": {"person": "x", "fps": 30, "frames": 9}},
                "segments": [{"video": "a.mp4", "label": "wave", "ranges": [[0, 3]]}],
            }
        )
    )
    with pytest.raises(DeviceBioError):
        ev.load_annotation(bad)
    bad.write_text("{")
    with pytest.raises(DeviceBioError):
        ev.load_annotation(bad)


def test_people_and_mirrored_turns() -> None:
    people = ev.build_people(ev.load_annotation())
    assert people["tvl"].complete  # the one person with every prompt type on camera
    # a person with one real turn answers the other direction with its mirror image
    d3 = people["d3"]
    assert "turn_right" in d3.mirrored
    assert all(c.flip for c in d3.responses["turn_right"])
    assert not any(c.flip for c in d3.responses["turn_left"])


def test_photo_attack_frames_are_camera_like() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, size=(250, 250, 3), dtype=np.uint8)
    still = ev.PhotoAttack(photo, rng, 1.0, "still_photo")
    frames = list(still)
    assert len(frames) == 31 and frames[0].rgb.shape == (480, 640, 3)
    assert [f.timestamp for f in frames[:3]] == pytest.approx([0, 1 / 30, 2 / 30])
    # the still print only differs by sensor noise; the trembling one moves
    diff_still = np.abs(frames[0].rgb.astype(int) - frames[15].rgb.astype(int)).mean()
    moving = list(ev.PhotoAttack(photo, np.random.default_rng(0), 1.0, "moving_photo"))
    diff_moving = np.abs(moving[0].rgb.astype(int) - moving[15].rgb.astype(int)).mean()
    assert diff_still < 3.0 < diff_moving


EVALUATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def _documented_rates() -> tuple[float, float]:
    """(BPCER, the APCER bound) docs/evaluation.md publishes for the full-size run: the
    genuine row's refusal rate, and for species with no accepted attack the rule-of-three 95%
    bound the text states (3 / n), the most those figures let a species' true APCER be."""
    text = EVALUATION_DOC.read_text()
    row = re.search(r"^\| genuine \(BPCER\) \| (\d+) \| (\d+) \| \*\*BPCER ([\d.]+)%", text, re.M)
    assert row, "docs/evaluation.md no longer has the genuine (BPCER) row this test reads"
    n, accepted, shown = int(row[1]), int(row[2]), float(row[3])
    assert round(100 * (n - accepted) / n, 1) == shown  # the row agrees with itself
    return (n - accepted) / n, 3 / n


def _most_refusals_allowed(rate: float, n: int, alpha: float = 0.01) -> int:
    """The fewest refusals k such that a system whose true rate is ``rate`` exceeds k out of
    ``n`` with probability <= ``alpha`` (binomial tail): more than k in a CI-sized run is
    evidence at the 1% level that the documented rate no longer holds."""
    for k in range(n + 1):
        tail = sum(math.comb(n, j) * rate**j * (1 - rate) ** (n - j) for j in range(k + 1, n + 1))
        if tail <= alpha:
            return k
    return n


def test_the_refusal_bound_is_the_binomial_tail() -> None:
    # 1.5% at n = 6: one refusal happens 8.7% of the time, two 0.33%: one is allowed, not two
    assert _most_refusals_allowed(0.015, 6) == 1
    assert _most_refusals_allowed(0.0, 6) == 0
    assert _most_refusals_allowed(0.5, 6) == 6
    assert _most_refusals_allowed(0.05, 200) == 18


@pytest.mark.slow
def test_ci_sized_run(video_dir: Path, lfw_dir: Path, pipeline) -> None:
    sessions, attacks = 6, 4
    report = ev.evaluate(
        video_dir, lfw_dir, sessions=sessions, attacks=attacks, seed=7, progress=False,
        pipeline=pipeline,
    )  # fmt: skip
    assert report["sessions"]["genuine"] == sessions
    assert all(report["sessions"][s] == attacks for s in ev.SPECIES)
    assert set(report["apcer"]) == set(ev.SPECIES)
    bpcer, apcer_bound = _documented_rates()
    refused = sessions - report["accepted"]["genuine"]
    assert refused <= _most_refusals_allowed(bpcer, sessions), report["reasons"]["genuine"]
    allowed = _most_refusals_allowed(apcer_bound, attacks)
    for species in ev.SPECIES:
        assert report["accepted"][species] <= allowed, (species, report["reasons"][species])
    assert report["apcer"]["still_photo"] == 0.0
    assert sum(report["reasons"]["still_photo"].values()) == attacks
    assert "seconds_total" in report and "machine" in report
    text = ev.format_table(report)
    assert "BPCER" in text and "still_photo" in text


def test_recorded_frames_are_measured_once_and_the_memo_changes_nothing(
    video_dir: Path, pipeline, monkeypatch
) -> None:
    from devicebio.liveness import ActiveLiveness

    cache = ev.FrameCache(video_dir, ev.load_annotation())
    live = ev.RememberingLiveness(pipeline, cache)
    calls: list[int] = []
    real = ActiveLiveness.measure

    def counting(self, rgb, *, eyes=True):  # type: ignore[no-untyped-def]
        calls.append(id(rgb))
        return real(self, rgb, eyes=eyes)

    monkeypatch.setattr(ActiveLiveness, "measure", counting)
    video = "selfie_headturn_lrud_tvl.mp4"
    frame = cache.get(video, 0)
    assert cache.get(video, 0, True) is cache.get(video, 0, True)  # one mirrored array
    first = live.measure(frame)
    assert live.measure(frame) is first and len(calls) == 1
    # a frame the cache does not own (a rendered photo attack) is always measured afresh
    outsider = frame.copy()
    again = live.measure(outsider)
    live.measure(outsider)
    assert len(calls) == 3
    # and the models are deterministic, so remembering changed no number
    assert first is not None and again is not None
    assert np.array_equal(first.mesh, again.mesh) and first.yaw == again.yaw


def test_the_evaluation_uses_only_the_public_liveness_api() -> None:
    """It measures what the product runs, so it may not reach into the liveness internals:
    every name it imports from devicebio.liveness is exported there, and every private
    attribute it touches (``x._name``) is one the evaluation package defines itself."""
    import ast

    import devicebio.liveness as liveness

    trees = [(p.name, ast.parse(p.read_text())) for p in Path(ev.__file__).parent.glob("*.py")]
    own: set[str] = set()
    for _, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
    for name, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "devicebio.liveness"
            ):
                assert node.module == "devicebio.liveness", (name, node.module)
                assert {a.name for a in node.names} <= set(liveness.__all__), name
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                assert node.attr.startswith("__") or node.attr in own, (name, node.attr)
