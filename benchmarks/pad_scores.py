"""How well the passive PAD scores separate genuine faces from screen recaptures.

Scores every sampled frame of (a) every clip of the shared genuine face videos and (b) the
collected recaptures (``manifest.csv`` in the recapture folder: source, file, label
``bona_fide`` / ``screen_replay``, person, screen, camera; see docs/data-recaptures.md), with
the product's own face detection (``FacePipeline(detector="fast")``: BlazeFace) feeding
``devicebio.vision.pad.PassivePad``. Frames are used at the camera's native resolution.

Printed (aggregates only; no per-frame score leaves the process):

- per clip: frames scored, median and 10th/90th percentile of each score;
- a DET table per score: APCER (attack frames scored live, score >= t) and BPCER (bona fide
  frames scored attack, score < t), each with its exact (Clopper-Pearson) 95% interval, at
  fixed thresholds, plus the equal-error point; at frame level and at clip level (a clip's
  median score);
- the same for each recapture source against all genuine clips;
- with ``--det-png PATH``, the DET curves of every score (all screen replays against all
  bona fide clips, frame and clip level) drawn to a small PNG (needs matplotlib).

Frames of one clip are strongly correlated: the frame-level intervals are too narrow, and
the honest sample size is the number of clips, people, screens and sources, printed with
every table. The moire cue is "higher = screen", so it is negated to read like the others.

Run::

    cd /work/main && PYTHONPATH=$PWD DEVICEBIO_MODEL_DIR=/tmp/models \\
        /tmp/dev/bin/python benchmarks/pad_scores.py [--recaptures DIR] [--video-dir DIR] \\
        [--det-png docs/pad-det.png]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _machine import describe_machine, machine_line

ENV_RECAPTURES = "DEVICEBIO_RECAPTURES"
DEFAULT_RECAPTURES = "/work/data/recaptures"
VIDEO_SUFFIXES = {".mp4", ".mpg", ".mov", ".webm", ".avi", ".mkv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
SCORES = ("fused", "v2_2.7", "v1se_4.0", "neg_moire")
THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


@dataclass
class Clip:
    source: str
    path: Path
    label: str  # "bona_fide" or an attack species
    person: str
    screen: str = ""
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @property
    def attack(self) -> bool:
        return self.label != "bona_fide"


# Clips of the shared videos that show the same person (its README): one person, two clips.
SAME_PERSON = {
    "webcam_timo_smile": "timo",
    "webcam_timo_nosmile": "timo",
    "webcam_talk_clm_cap12": "clm",
    "webcam_talk_clm_cap13": "clm",
}


def interval(k: int, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 95% interval of k errors in n trials."""
    from devicebio.evaluation.metrics import clopper_pearson

    return clopper_pearson(k, n) if n else (0.0, 1.0)


def clips_from(recaptures: Path, video_dir: Path) -> list[Clip]:
    clips = [
        Clip("shared-genuine", p, "bona_fide", SAME_PERSON.get(p.stem, p.stem))
        for p in sorted(video_dir.iterdir())
        if p.suffix.lower() in VIDEO_SUFFIXES
    ]
    manifest = recaptures / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as fh:
            for row in csv.DictReader(fh):
                clips.append(
                    Clip(
                        row["source"],
                        recaptures / row["file"],
                        row["label"],
                        row["person"],
                        row.get("screen", ""),
                    )
                )
    else:
        print(f"no {manifest}: genuine clips only")
    return clips


def score_clips(clips: list[Clip], step_s: float, max_frames: int, threads: int) -> None:
    from devicebio.vision.pad import PassivePad
    from devicebio.vision.pipeline import FacePipeline

    faces = FacePipeline(detector="fast", threads=threads)
    pad = PassivePad(threads=threads)
    spent = {"detect": 0.0, "pad": 0.0}
    scored = 0
    for clip in clips:
        for rgb in _frames(clip.path, step_s, max_frames):
            t0 = time.process_time()
            found, _ = faces.detect(rgb)
            spent["detect"] += time.process_time() - t0
            if not found:
                continue
            detection = max(found, key=lambda f: f[0].width * f[0].height)[0]
            t0 = time.process_time()
            s = pad.score(rgb, detection)
            spent["pad"] += time.process_time() - t0
            scored += 1
            clip.scores["fused"].append(s.fused)
            clip.scores["v2_2.7"].append(s.live[0])
            clip.scores["v1se_4.0"].append(s.live[1])
            if s.moire is not None:
                clip.scores["neg_moire"].append(-s.moire)
    if scored:
        print(
            f"CPU time per scored frame: PAD (both models + moire) "
            f"{spent['pad'] / max(spent['detect'], 1e-9):.2f}x the face detection of the same "
            f"frames ({scored} frames; a ratio, since the machine is shared)"
        )


def _frames(path: Path, step_s: float, max_frames: int) -> Iterator[np.ndarray]:
    """RGB frames every ``step_s`` seconds (a still image is one frame)."""
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES:
        bgr = cv2.imread(str(path))
        if bgr is not None:
            yield np.ascontiguousarray(bgr[:, :, ::-1])
        return
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    every = max(1, round(fps * step_s))
    index = taken = 0
    try:
        while taken < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            index += 1
            if (index - 1) % every == 0:
                taken += 1
                yield np.ascontiguousarray(bgr[:, :, ::-1])
    finally:
        cap.release()


def _q(values: list[float]) -> str:
    if not values:
        return "        -        "
    a = np.asarray(values)
    return f"{np.median(a):6.3f} [{np.percentile(a, 10):6.3f},{np.percentile(a, 90):6.3f}]"


def print_clips(clips: list[Clip]) -> None:
    print("\n## per clip: frames, median [p10, p90] of each score")
    print(
        f"{'source':15s} {'clip':44s} {'label':13s} {'n':>3s}  "
        + "  ".join(f"{s:^22s}" for s in SCORES)
    )
    for c in clips:
        n = len(c.scores["fused"])
        row = "  ".join(f"{_q(c.scores[s]):22s}" for s in SCORES)
        print(f"{c.source:15s} {c.path.name[:44]:44s} {c.label:13s} {n:3d}  {row}")


def _det(bona: np.ndarray, attack: np.ndarray, unit: str) -> None:
    print(f"  {'t':>5s}  {'APCER':>7s} {'95% CI':>15s}   {'BPCER':>7s} {'95% CI':>15s}")
    for t in THRESHOLDS:
        ka, kb = int(np.sum(attack >= t)), int(np.sum(bona < t))
        la, ha = interval(ka, len(attack))
        lb, hb = interval(kb, len(bona))
        print(
            f"  {t:5.2f}  {ka / len(attack):7.1%} [{la:6.1%},{ha:6.1%}]   "
            f"{kb / len(bona):7.1%} [{lb:6.1%},{hb:6.1%}]"
        )
    # equal-error point over every observed score
    cand = np.unique(np.concatenate([bona, attack]))
    apcer = np.array([np.mean(attack >= t) for t in cand])
    bpcer = np.array([np.mean(bona < t) for t in cand])
    i = int(np.argmin(np.abs(apcer - bpcer)))
    print(f"  EER ~ {(apcer[i] + bpcer[i]) / 2:.1%} at t = {cand[i]:.3f} ({unit})")
    ok = bpcer <= 0.05
    if ok.any():
        j = int(np.argmin(np.where(ok, apcer, np.inf)))
        print(
            f"  lowest APCER with BPCER <= 5%: APCER {apcer[j]:.1%}, "
            f"BPCER {bpcer[j]:.1%} at t = {cand[j]:.3f}"
        )


def print_det(clips: list[Clip], title: str) -> None:
    bona_clips = [c for c in clips if not c.attack and c.scores["fused"]]
    attack_clips = [c for c in clips if c.attack and c.scores["fused"]]
    if not bona_clips or not attack_clips:
        print(f"\n## {title}: needs both bona fide and attack clips")
        return
    people = {c.person for c in clips if c.scores["fused"]}
    screens = {(c.source, c.screen) for c in attack_clips}
    sources = {c.source for c in attack_clips}
    print(
        f"\n## {title}\n  bona fide: {len(bona_clips)} clips, "
        f"{sum(len(c.scores['fused']) for c in bona_clips)} frames; attacks: {len(attack_clips)} "
        f"clips, {sum(len(c.scores['fused']) for c in attack_clips)} frames, {len(screens)} "
        f"screen(s), {len(sources)} source(s); {len(people)} distinct people"
    )
    for score in SCORES:
        bona = np.concatenate([c.scores[score] for c in bona_clips if c.scores[score]])
        attack_lists = [c.scores[score] for c in attack_clips if c.scores[score]]
        if not attack_lists:
            continue
        attack = np.concatenate(attack_lists)
        print(f"\n### {score}: frame level ({len(bona)} bona fide, {len(attack)} attack frames)")
        _det(bona, attack, "frames")
        cb = np.array([np.median(c.scores[score]) for c in bona_clips if c.scores[score]])
        ca = np.array([np.median(s) for s in attack_lists])
        print(
            f"### {score}: clip level, median score per clip "
            f"({len(cb)} bona fide, {len(ca)} attack clips)"
        )
        _det(cb, ca, "clips")


def _curve(bona: np.ndarray, attack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(BPCER, APCER) at every observed score, from the strictest threshold to the laxest."""
    cand = np.unique(np.concatenate([bona, attack, [np.inf]]))
    return (
        np.array([np.mean(bona < t) for t in cand]),
        np.array([np.mean(attack >= t) for t in cand]),
    )


def plot_det(clips: list[Clip], out: Path) -> None:
    """DET curves of each score, screen replays against bona fide, frame and clip level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bona_clips = [c for c in clips if not c.attack and c.scores["fused"]]
    attack_clips = [c for c in clips if c.attack and c.scores["fused"]]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.0), dpi=90)
    for ax, level in zip(axes, ("frames", "clips (median)"), strict=True):
        for score in SCORES:
            per_b = [c.scores[score] for c in bona_clips if c.scores[score]]
            per_a = [c.scores[score] for c in attack_clips if c.scores[score]]
            if not per_b or not per_a:
                continue
            if level == "frames":
                bona, attack = np.concatenate(per_b), np.concatenate(per_a)
            else:
                bona = np.array([np.median(v) for v in per_b])
                attack = np.array([np.median(v) for v in per_a])
            bp, ap = _curve(bona, attack)
            ax.step(bp * 100, ap * 100, where="post", label=f"{score}")
        ax.set_xlabel("BPCER (%)")
        ax.set_ylabel("APCER (%)")
        ax.set_xlim(-1, 50)
        ax.set_ylim(-1, 101)
        ax.axvline(5, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        n_b = sum(len(v) for v in per_b) if level == "frames" else len(per_b)
        n_a = sum(len(v) for v in per_a) if level == "frames" else len(per_a)
        ax.set_title(f"{level}: {n_b} bona fide, {n_a} attack", fontsize=9)
    axes[0].legend(fontsize=8)
    sources = {c.source for c in attack_clips}
    fig.suptitle(
        f"Passive PAD DET, real screen replays ({len(attack_clips)} items, "
        f"{len(sources)} sources): anecdote-sized",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"DET curves written to {out}")


def main(argv: list[str] | None = None) -> int:
    from devicebio.evaluation import shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--recaptures",
        type=Path,
        default=Path(os.environ.get(ENV_RECAPTURES, DEFAULT_RECAPTURES)),
        help=f"folder with manifest.csv (default ${ENV_RECAPTURES} or {DEFAULT_RECAPTURES})",
    )
    ap.add_argument("--video-dir", type=Path, default=None, help="genuine videos (shared data)")
    ap.add_argument("--step", type=float, default=0.2, help="seconds between sampled frames")
    ap.add_argument("--max-frames", type=int, default=60, help="frames scored per clip at most")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--det-png", type=Path, default=None, help="draw the DET curves here")
    args = ap.parse_args(argv)
    video_dir = args.video_dir or shared_data("video", "DEVICEBIO_VIDEO")

    clips = clips_from(args.recaptures, video_dir)
    print(machine_line(describe_machine()))
    print(f"step {args.step} s, at most {args.max_frames} frames a clip")
    score_clips(clips, args.step, args.max_frames, args.threads)
    print_clips(clips)
    screens = [c for c in clips if c.label in ("bona_fide", "screen_replay")]
    print_det(screens, "all screen replays against all bona fide clips")
    if args.det_png is not None:
        plot_det(screens, args.det_png)
    for source in sorted({c.source for c in clips if c.attack}):
        subset = [c for c in clips if not c.attack or c.source == source]
        print_det(subset, f"source {source} against all bona fide clips")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
