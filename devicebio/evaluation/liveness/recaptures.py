"""Real screen recaptures (docs/data-recaptures.md) shown to the product's presentation-attack
detectors: one manifest item = one session's frames, faces found by the product's detector.

They carry no prompt annotation, so they cannot answer a challenge: each stands for a steered
replay whose active part the attacker already beat (the issue measured 42 of 100 such
challenges passing the active checks), i.e. the PAD is the last check left. Reported per
label with the number of distinct people, screens and sources; only pass/fail per item,
never a score.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation.liveness.footage import MAX_WIDTH
from devicebio.sources import Frame

ENV_RECAPTURES = "DEVICEBIO_RECAPTURES"
STILL_FRAMES = 12  # a still is shown as a session: the same image for 12 frames at 30 fps
MAX_FRAMES = 300  # the first 10 s of a clip, as long as a session


def recapture_dir(arg: str | os.PathLike[str] | None) -> Path | None:
    """The real recaptures' folder: ``arg``, else ``$DEVICEBIO_RECAPTURES``, else none."""
    chosen = arg or os.environ.get(ENV_RECAPTURES)
    return Path(chosen) if chosen else None


def item_frames(path: Path, limit: int = MAX_FRAMES) -> list[Frame]:
    """A manifest item as camera frames (<= 640 px wide, as the evaluation's footage)."""
    import cv2

    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise DeviceBioError(Reason.FRAME_SOURCE, f"cannot read {path.name}")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        return [Frame(rgb, i / 30.0) for i in range(STILL_FRAMES)]
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    out: list[Frame] = []
    while len(out) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        h, w = bgr.shape[:2]
        if w > MAX_WIDTH:
            size = (MAX_WIDTH, round(h * MAX_WIDTH / w))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        out.append(Frame(np.ascontiguousarray(bgr[:, :, ::-1]), len(out) / fps))
    cap.release()
    if not out:
        raise DeviceBioError(Reason.FRAME_SOURCE, f"cannot decode {path.name}")
    return out


def real_recaptures(folder: Path, pipeline: Any, detectors: Sequence[Any]) -> dict[str, Any]:
    """Each item of ``folder/manifest.csv`` (source, file, label, person, screen, camera)
    through ``detectors``; APCER per attack label, BPCER on the bona fide items."""
    from devicebio.evaluation import metrics

    try:
        with (folder / "manifest.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"no readable manifest.csv in {folder}: {exc.strerror}"
        ) from None
    items: list[dict[str, Any]] = []
    for row in rows:
        frames = item_frames(folder / row["file"])
        faces = []
        for f in frames:
            found, _ = pipeline.detect(f.rgb)
            faces.append(max(found, key=lambda d: d[0].width)[0] if found else None)
        verdicts = [d.assess(frames, faces) for d in detectors]
        passed = bool(verdicts) and all(v.passed for v in verdicts)
        items.append({k: row.get(k, "") for k in ("source", "file", "label", "person", "screen")})
        items[-1] |= {"frames": len(frames), "passed": passed}
    out: dict[str, Any] = {"detectors": [str(d.name) for d in detectors], "items": items}
    for label in sorted({i["label"] for i in items}):
        group = [i for i in items if i["label"] == label]
        bona = label == "bona_fide"
        wrong = sum(bool(i["passed"]) != bona for i in group)
        out[label] = {
            "items": len(group),
            "people": len({i["person"] for i in group}),
            "screens": len({i["screen"] for i in group if i["screen"]}),
            "sources": len({i["source"] for i in group}),
            "bpcer" if bona else "apcer": metrics.rate(wrong, len(group)),
        }
    return out
