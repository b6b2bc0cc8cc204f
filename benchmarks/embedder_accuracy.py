"""LFW accuracy of each embedder setting, on the same chips: fp32 or int8, with or without the
mirror average. And (``--calibrate``) the int8 activation ranges, from photos outside LFW's
evaluation pairs.

Every photo of LFW's View-2 pairs goes through the shipped pipeline's detection, landmarks and
alignment once (``select="center"``, no gates, as ``devicebio eval lfw`` does); each setting
then embeds the same chips, so the rows differ only by the embedder. Pairs are scored by the
product's decision rule (one photo against one photo) and reported the way
``devicebio eval lfw`` reports them: 10-fold accuracy (threshold chosen on the other nine
folds), TAR at FAR 1e-2 and 1e-3, EER, FAR/FRR at the default threshold, and how far each
setting's unit embeddings land from the fp32 mirrored ones (the dlib-faithful reference).

Chips, embeddings and distances stay in this process's memory; only aggregates are printed.

Run::

    PYTHONPATH=. DEVICEBIO_MODEL_DIR=... python benchmarks/embedder_accuracy.py [--json OUT]
    PYTHONPATH=. DEVICEBIO_MODEL_DIR=... python benchmarks/embedder_accuracy.py --calibrate
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from _machine import describe_machine, machine_line

DEFAULT_LFW = Path(os.environ.get("DEVICEBIO_LFW", "/work/shared/data/lfw"))
CALIBRATION_SEED = 7
CALIBRATION_PHOTOS = 256


def _chips(pipe: Any, paths: list[Path]) -> dict[Path, Any]:
    """The pipeline's 150x150 chip of the face nearest the centre of each photo (if any)."""
    import cv2
    import numpy as np

    class Recorder:  # stands in for the embedder: keeps the chip the pipeline hands over
        chip: Any = None

        def embed_mirrored(self, batch: Any) -> Any:
            self.chip = batch[0].copy()
            return np.ones((1, 128), np.float32)

        embed = embed_mirrored

    rec = Recorder()
    real, pipe._embedder = pipe._embedder, rec
    out: dict[Path, Any] = {}
    try:
        for i, path in enumerate(paths):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read {path}")
            rec.chip = None
            pipe.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), select="center", gates=False)
            if rec.chip is not None:
                out[path] = rec.chip
            if i % 500 == 0:
                print(f"[embedder_accuracy] chips {i}/{len(paths)}", file=sys.stderr, flush=True)
    finally:
        pipe._embedder = real
    return out


def _outside_eval(lfw: Path, pairs: list[Any]) -> list[Path]:
    """LFW photos of the people who appear in no evaluation pair (sorted)."""
    in_eval = {p.a.split("/")[0] for p in pairs} | {p.b.split("/")[0] for p in pairs}
    photos = sorted((lfw / "images").glob("*/*.jpg"))
    return [p for p in photos if p.parent.name not in in_eval]


def _calibrate(args: argparse.Namespace, pipe: Any, pairs: list[Any]) -> int:
    import numpy as np

    from devicebio.vision import models
    from devicebio.vision.build.resnet_int8 import calibrate_ranges

    outside = _outside_eval(args.lfw, pairs)
    sample = sorted(random.Random(CALIBRATION_SEED).sample(outside, min(300, len(outside))))
    chips = np.stack(list(_chips(pipe, sample).values())[:CALIBRATION_PHOTOS]).astype(np.float32)
    batches = [np.concatenate([c, c[:, :, ::-1]]) for c in np.split(chips, len(chips) // 8)]
    print(
        f"# {len(chips)} chips (and mirrors) of {len(outside)} photos of people in no pair",
        file=sys.stderr,
    )
    ranges = calibrate_ranges(models.load_model("dlib_resnet_v1"), batches)
    print("ACTIVATION_RANGES: dict[str, tuple[float, float]] = {")
    for name, (lo, hi) in ranges.items():
        print(f'    "{name}": ({float(f"{lo:.6g}")!r}, {float(f"{hi:.6g}")!r}),')
    print("}")
    return 0


def _score(keys: list[str], emb: Any, pairs: list[Any], emb_b: Any = None) -> dict[str, Any]:
    """The report row for ``emb``; with ``emb_b``, each pair's second photo is embedded by
    ``emb_b`` instead (one side a template, the other a probe embedded differently)."""
    import numpy as np

    from devicebio import decision
    from devicebio.evaluation import metrics

    index = {k: i for i, k in enumerate(keys)}
    found = [p for p in pairs if p.a in index and p.b in index]
    d = decision.paired_fused_distances(
        emb[[index[p.a] for p in found]][:, None],
        (emb if emb_b is None else emb_b)[[index[p.b] for p in found]][:, None],
    )
    scored = dict(zip(found, d.tolist(), strict=True))
    folds = sorted({p.fold for p in pairs})
    g = [np.array([scored.get(p, np.inf) for p in pairs if p.fold == f and p.same]) for f in folds]
    i = [
        np.array([scored.get(p, np.inf) for p in pairs if p.fold == f and not p.same])
        for f in folds
    ]
    accs, _ = metrics.kfold_accuracy(g, i)
    genuine, impostor = np.concatenate(g), np.concatenate(i)
    far, frr = metrics.rates_at(genuine, impostor, decision.Policy.of().threshold)
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "tar_at_far_1e-2": metrics.tar_at_far(genuine, impostor, 1e-2),
        "tar_at_far_1e-3": metrics.tar_at_far(genuine, impostor, 1e-3),
        "eer": metrics.eer(genuine, impostor)[0],
        "far_at_default": far,
        "frr_at_default": frr,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    p.add_argument("--calibrate", action="store_true", help="print the int8 activation ranges")
    p.add_argument("--json", help="write the report here")
    args = p.parse_args(argv)
    import numpy as np

    from devicebio.evaluation.lfw import parse_pairs
    from devicebio.vision import models
    from devicebio.vision._ort import make_session
    from devicebio.vision.embedder import Embedder, session_initializers
    from devicebio.vision.pipeline import EMBEDDERS, FacePipeline

    machine = describe_machine()
    _, pairs = parse_pairs(args.lfw / "pairs.txt")
    pipe = FacePipeline()
    if args.calibrate:
        return _calibrate(args, pipe, pairs)
    wanted = sorted({q.a for q in pairs} | {q.b for q in pairs})
    t0 = time.perf_counter()
    got = _chips(pipe, [args.lfw / "images" / w for w in wanted])
    keys = [str(k.relative_to(args.lfw / "images")) for k in got]
    chips = np.stack(list(got.values()))
    del got
    print(f"{len(keys)} of {len(wanted)} photos gave a chip ({time.perf_counter() - t0:.0f} s)")

    def unit(x: Any) -> Any:
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    rows: dict[str, dict[str, Any]] = {}
    reference = None
    for kind in ("fp32", "int8"):
        data = models.load_model(EMBEDDERS[kind])
        emb = Embedder(make_session(data, initializers=session_initializers()))
        plain, mirrored = [], []
        for a in range(0, len(chips), 16):
            both = emb.embed(np.concatenate([chips[a : a + 16], chips[a : a + 16, :, ::-1]]))
            n = len(both) // 2
            plain.append(both[:n])
            mirrored.append((both[:n] + both[n:]) * np.float32(0.5))
        units = {}
        for mirror, parts in ((True, mirrored), (False, plain)):
            e = units[mirror] = unit(np.concatenate(parts))
            if reference is None:
                reference = e  # fp32 with the mirror: the dlib-faithful embedding
            row = _score(keys, e, pairs)
            drift = np.linalg.norm(e - reference, axis=1)
            row["drift_p50"], row["drift_max"] = float(np.median(drift)), float(drift.max())
            rows[f"{kind}{'' if mirror else ' no-mirror'}"] = row
        # The mirror at enrolment only: the template mirrored, the probe not. Pairs are
        # unordered, so both assignments are scored (first photo the template, then second).
        drift = np.linalg.norm(units[False] - reference, axis=1)
        for name, (a, b) in (
            ("a", (units[True], units[False])),
            ("b", (units[False], units[True])),
        ):
            row = _score(keys, a, pairs, b)
            row["drift_p50"], row["drift_max"] = float(np.median(drift)), float(drift.max())
            rows[f"{kind} enrol-mirror {name}"] = row

    print(machine_line(machine))
    print(f"LFW View-2: {len(pairs)} pairs, {len(keys)} photos with a face")
    head = (
        f"{'embedder':<22}{'10-fold acc':>16}{'TAR@1e-2':>10}{'TAR@1e-3':>10}{'EER':>7}"
        f"{'FAR@def':>9}{'FRR@def':>9}{'drift p50/max':>15}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(
            f"{name:<22}{r['accuracy_mean']:>10.2%} ±{r['accuracy_std']:.2%}"
            f"{r['tar_at_far_1e-2']:>10.2%}{r['tar_at_far_1e-3']:>10.2%}{r['eer']:>7.2%}"
            f"{r['far_at_default']:>9.2%}{r['frr_at_default']:>9.2%}"
            f"{r['drift_p50']:>8.4f}/{r['drift_max']:.4f}"
        )
    print("(drift: distance of each unit embedding from the fp32 mirrored one, same photo;")
    print(" enrol-mirror a/b: template mirrored, probe plain; a: each pair's first photo is the")
    print(" template, b: its second; drift is the probe's)")
    if args.json:
        out = {"machine": machine, "pairs": len(pairs), "photos": len(keys), "rows": rows}
        Path(args.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
