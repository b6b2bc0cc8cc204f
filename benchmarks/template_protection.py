"""Template protection on LFW: accuracy with and without it, and unlinkability (D<->sys).

Every image of the chosen LFW folds goes once through the real pipeline (``FacePipeline()``,
capture-quality gates off and ``select="center"``, exactly as ``devicebio eval lfw`` does).
The embeddings stay in this process's memory: no embedding, template or score is written
anywhere (a privacy rule of the project); only aggregate figures are printed or written.

1. **Accuracy, raw vs protected.** The LFW View-2 protocol (10-fold accuracy with each fold's
   threshold chosen on the other folds, TAR at FAR 1e-3, EER) on raw embeddings, and again
   in the operational setting: every subject has its own :class:`TemplateKey`; the first
   image of a pair is that subject's enrolment, protected under the subject's key, and the
   second image is the probe, transformed with the same key (the device applies the key of
   the enrolment it compares against, whoever stands in front of the camera). A rotation
   preserves distances, so the figures must agree to 0.01 pp.

2. **Unlinkability** (Gomez-Barrero et al., "General framework to evaluate unlinkability in
   biometric template protection systems", IEEE TIFS 13(6), 2018 (online 2017); the basis of
   ISO/IEC 30136's unlinkability metric). Mated comparisons = LFW same-person pairs, non-mated
   = different-person pairs, and in the protected case each side of every pair is protected
   under its own fresh key, as two independent enrolments would be. The attacker compares
   two templates with a score ``s``; with the likelihood ratio
   ``LR(s) = p(s|mated) / p(s|non-mated)`` and prior ratio ``omega = 1`` the local measure is
   ``D(s) = 2 * omega*LR / (1 + omega*LR) - 1`` where ``omega*LR > 1``, else 0, and
   ``D<->sys = integral of D(s) p(s|mated) ds`` (0 = unlinkable, 1 = fully linkable).

   Densities are estimated two ways: (a) histograms on shared bins over the pooled score
   range, ``max(10, min(100, n_mated // 10))`` bins, LR taken bin by bin (a bin with mated but
   no non-mated mass counts as D = 1) and the integral a mass-weighted sum over bins; (b) a
   Gaussian KDE (Silverman's bandwidth, each class its own) on a 2,048-point grid, integrated
   with the trapezoid rule. A finite sample makes even identical distributions look slightly
   different, so the estimator's floor is reported too: the mean and 95th percentile of
   D<->sys of the same scores with the mated/non-mated labels shuffled (20 shuffles); a value
   inside that range is indistinguishable from "unlinkable" at this sample size.

   Attackers (score functions) reported:
   - ``distance``: the system's own comparator, Euclidean distance between the two templates;
     on raw embeddings this is plain face matching (the contrast: ~1, fully linkable);
   - ``norm``: ``| |a| - |b| |``, the one quantity a rotation cannot hide (``|Q x| = |x|``).
   Each for raw embeddings, for the shipped transform (rotation + secret offset), and for the
   two variants it was chosen over: rotation only (``protect(x) - protect(0)`` = ``Q x``) and
   mean-centring before the rotation (the mean of this run's embeddings, which flatters
   centring).

Run (``--folds 0`` = one fold, 600 pairs, 807 images, a few minutes; no ``--folds`` = all
6,000 pairs, 7,701 images)::

    cd /work/main && PYTHONPATH=/work/main DEVICEBIO_MODEL_DIR=/tmp/models \\
        /work/venv/bin/python benchmarks/template_protection.py --folds 0 --json /tmp/tp.json
"""

from __future__ import annotations

import os

# One thread for BLAS: thousands of 128x128 QR factorisations are ~20x slower when OpenBLAS
# spreads each one over busy cores. ONNX Runtime and OpenCV keep their own thread pools.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _machine import describe_machine  # noqa: E402

from devicebio import decision  # noqa: E402
from devicebio.evaluation import lfw, metrics  # noqa: E402
from devicebio.protect import ALGORITHM, TemplateKey  # noqa: E402

Score = Callable[[np.ndarray, np.ndarray], np.ndarray]
SHUFFLES = 20


# ---- embedding (in memory only) -----------------------------------------------------------


def embed_images(
    images: Path, rels: list[str], progress: bool
) -> tuple[dict[str, np.ndarray], int]:
    import cv2

    from devicebio.vision.pipeline import FaceCapture, FacePipeline, QualityLimits

    gates_off = QualityLimits(
        min_face_px=0, min_brightness=0, max_brightness=256, min_sharpness=0, max_yaw_deg=91
    )
    pipe = FacePipeline(limits=gates_off)
    out: dict[str, np.ndarray] = {}
    no_face = 0
    for n, rel in enumerate(rels, 1):
        bgr = cv2.imread(str(images / rel), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {images / rel}")
        result = pipe.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), select="center")
        if isinstance(result, FaceCapture):
            out[rel] = np.asarray(result.embedding, np.float32)
        else:
            no_face += 1
        if progress and (n % 200 == 0 or n == len(rels)):
            print(f"  embedded {n}/{len(rels)} images", file=sys.stderr, flush=True)
    return out, no_face


def subject(rel: str) -> str:
    return rel.split("/", 1)[0]


# ---- (1) accuracy -------------------------------------------------------------------------


def accuracy_figures(pairs: list[lfw.Pair], dist: Callable[[lfw.Pair], float]) -> dict[str, Any]:
    folds = sorted({p.fold for p in pairs})
    g = [np.array([dist(p) for p in pairs if p.fold == f and p.same]) for f in folds]
    i = [np.array([dist(p) for p in pairs if p.fold == f and not p.same]) for f in folds]
    genuine, impostor = np.concatenate(g), np.concatenate(i)
    accs, _ = metrics.kfold_accuracy(g, i)
    eer, _ = metrics.eer(genuine, impostor)
    return {
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "tar_at_far_1e-3": metrics.tar_at_far(genuine, impostor, 1e-3),
        "eer": float(eer),
        "_distances": np.concatenate([genuine, impostor]),
    }


# ---- (2) unlinkability --------------------------------------------------------------------


def _local_d(lr: np.ndarray, omega: float = 1.0) -> np.ndarray:
    olr = omega * lr
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(olr > 1.0, 2.0 * olr / (1.0 + olr) - 1.0, 0.0)
    return np.where(np.isinf(olr), 1.0, d)


def dsys_histogram(mated: np.ndarray, nonmated: np.ndarray, bins: int) -> float:
    lo = min(mated.min(), nonmated.min())
    hi = max(mated.max(), nonmated.max())
    if hi <= lo:
        return 0.0
    edges = np.linspace(lo, hi, bins + 1)
    pm = np.histogram(mated, edges)[0] / len(mated)
    pn = np.histogram(nonmated, edges)[0] / len(nonmated)
    with np.errstate(invalid="ignore", divide="ignore"):
        lr = np.where(pm > 0, pm / pn, 0.0)  # pm > 0, pn == 0 -> inf -> D = 1
    return float(np.sum(pm * _local_d(lr)))


def _kde(samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    std = float(np.std(samples))
    iqr = float(np.subtract(*np.percentile(samples, [75, 25])))
    spread = min(std, iqr / 1.349) if iqr > 0 else std
    h = 0.9 * max(spread, 1e-12) * len(samples) ** (-0.2)  # Silverman's rule of thumb
    dens = np.zeros_like(grid)
    for chunk in np.array_split(samples, max(1, len(samples) // 256)):
        z = (grid[None, :] - chunk[:, None]) / h
        dens += np.exp(-0.5 * z * z).sum(axis=0)
    return dens / (len(samples) * h * np.sqrt(2.0 * np.pi))


def dsys_kde(mated: np.ndarray, nonmated: np.ndarray, points: int = 2048) -> float:
    pooled = np.concatenate([mated, nonmated])
    pad = 0.1 * (pooled.max() - pooled.min() + 1e-12)
    grid = np.linspace(pooled.min() - pad, pooled.max() + pad, points)
    pm, pn = _kde(mated, grid), _kde(nonmated, grid)
    with np.errstate(invalid="ignore", divide="ignore"):
        lr = np.where(pm > 0, pm / pn, 0.0)
    # Far in the tails both densities underflow to 0; LR is meaningless there and p_m ~ 0.
    return float(np.trapezoid(pm * _local_d(lr), grid))


def unlinkability(
    mated: np.ndarray, nonmated: np.ndarray, rng: np.random.Generator
) -> dict[str, float]:
    bins = max(10, min(100, len(mated) // 10))
    pooled = np.concatenate([mated, nonmated])
    floor = []
    for _ in range(SHUFFLES):
        perm = rng.permutation(pooled)
        floor.append(dsys_histogram(perm[: len(mated)], perm[len(mated) :], bins))
    return {
        "dsys_hist": dsys_histogram(mated, nonmated, bins),
        "dsys_kde": dsys_kde(mated, nonmated),
        "dsys_floor_hist": float(np.mean(floor)),
        "dsys_floor_hist_p95": float(np.percentile(floor, 95)),
        "bins": bins,
    }


def euclid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.astype(np.float64) - b, axis=1)


def norm_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.linalg.norm(a.astype(np.float64), axis=1) - np.linalg.norm(b, axis=1))


# ---- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lfw", type=Path, default=lfw.default_lfw_dir(), help="LFW folder (images/, pairs.txt)"
    )
    parser.add_argument(
        "--folds", type=int, nargs="+", help="LFW folds to use (0-9); default: all 10"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the aggregate figures")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args()
    started = time.perf_counter()

    _, pairs = lfw.parse_pairs(args.lfw / "pairs.txt")
    if args.folds is not None:
        pairs = [p for p in pairs if p.fold in set(args.folds)]
    rels = sorted({p.a for p in pairs} | {p.b for p in pairs})
    t0 = time.perf_counter()
    emb, no_face = embed_images(args.lfw / "images", rels, not args.quiet)
    embed_s = time.perf_counter() - t0

    # (1) accuracy: raw, and protected with one key per enrolled subject.
    t0 = time.perf_counter()
    subject_keys: dict[str, TemplateKey] = {}

    def key_of(name: str) -> TemplateKey:
        if name not in subject_keys:
            subject_keys[name] = TemplateKey.new()
        return subject_keys[name]

    # Each pair is a one-frame transaction against a one-template enrolment, scored by the
    # product's decision rule (devicebio.decision), raw and protected.
    def one_to_one(template: np.ndarray, probe: np.ndarray) -> float:
        return float(decision.paired_fused_distances(probe[None, None], template[None, None])[0])

    def raw_dist(p: lfw.Pair) -> float:
        if p.a not in emb or p.b not in emb:
            return float("inf")
        return one_to_one(emb[p.a], emb[p.b])

    def protected_dist(p: lfw.Pair) -> float:
        if p.a not in emb or p.b not in emb:
            return float("inf")
        key = key_of(subject(p.a))
        return one_to_one(key.protect(emb[p.a]), key.protect(emb[p.b]))

    raw = accuracy_figures(pairs, raw_dist)
    prot = accuracy_figures(pairs, protected_dist)
    d_raw, d_prot = raw.pop("_distances"), prot.pop("_distances")
    finite = np.isfinite(d_raw)
    max_dist_diff = float(np.max(np.abs(d_raw[finite] - d_prot[finite])))
    accuracy_s = time.perf_counter() - t0

    # (2) unlinkability: both sides of every pair under their own fresh key.
    t0 = time.perf_counter()
    usable = [p for p in pairs if p.a in emb and p.b in emb]
    mated_pairs = [p for p in usable if p.same]
    nonmated_pairs = [p for p in usable if not p.same]
    mean = np.mean(np.stack(list(emb.values())), axis=0, dtype=np.float64).astype(np.float32)

    def sides(group: list[lfw.Pair]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Both sides of each pair, raw and under each variant, every side with its own key."""
        a = np.stack([emb[p.a] for p in group])
        b = np.stack([emb[p.b] for p in group])
        zero = np.zeros(a.shape[1], np.float32)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {"raw": (a, b)}
        full, rot, crot = [], [], []
        for side in (a, b):
            f, r, c = [], [], []
            for v in side:
                key = TemplateKey.new()
                f.append(key.protect(v))
                # Rotation alone, for the contrast: protect(x) - protect(0) = Q x.
                r.append(key.protect(v) - key.protect(zero))
                c.append(key.protect(v - mean) - key.protect(zero))
            full.append(np.stack(f))
            rot.append(np.stack(r))
            crot.append(np.stack(c))
        out["protected"] = (full[0], full[1])
        out["rotation only"] = (rot[0], rot[1])
        out["centred + rotation only"] = (crot[0], crot[1])
        return out

    rng = np.random.default_rng()
    mated_views, nonmated_views = sides(mated_pairs), sides(nonmated_pairs)
    settings: list[tuple[str, str, Score]] = [
        ("unprotected, distance", "raw", euclid),
        ("unprotected, norm", "raw", norm_gap),
        ("rotation only, distance", "rotation only", euclid),
        ("rotation only, norm", "rotation only", norm_gap),
        ("centred+rotation, norm", "centred + rotation only", norm_gap),
        ("protected, distance", "protected", euclid),
        ("protected, norm", "protected", norm_gap),
    ]
    scores: dict[str, dict[str, Any]] = {}
    for label, view, score in settings:
        mated = score(*mated_views[view])
        nonmated = score(*nonmated_views[view])
        scores[label] = unlinkability(mated, nonmated, rng)
    link_s = time.perf_counter() - t0

    # What the transform costs on the device: creating/loading a key, protecting one probe.
    t0 = time.perf_counter()
    bench_keys = [TemplateKey.new() for _ in range(50)]
    key_ms = (time.perf_counter() - t0) / 50 * 1e3
    probe = next(iter(emb.values()))
    t0 = time.perf_counter()
    for _ in range(2000):
        bench_keys[0].protect(probe)
    protect_us = (time.perf_counter() - t0) / 2000 * 1e6
    total_s = time.perf_counter() - started

    report: dict[str, Any] = {
        "dataset": str(args.lfw),
        "folds": sorted({p.fold for p in pairs}),
        "pairs": len(pairs),
        "images": len(rels),
        "no_face_images": no_face,
        "accuracy": {
            "raw": raw,
            "protected": prot,
            "subject_keys": len(subject_keys),
            "max_abs_distance_change": max_dist_diff,
            "accuracy_diff_pp": 100 * abs(raw["accuracy_mean"] - prot["accuracy_mean"]),
            "tar_diff_pp": 100 * abs(raw["tar_at_far_1e-3"] - prot["tar_at_far_1e-3"]),
            "eer_diff_pp": 100 * abs(raw["eer"] - prot["eer"]),
        },
        "unlinkability": {
            "mated_pairs": len(mated_pairs),
            "nonmated_pairs": len(nonmated_pairs),
            "omega": 1.0,
            "shuffles_for_floor": SHUFFLES,
            "attackers": scores,
        },
        "seconds": {
            "embedding": embed_s,
            "accuracy": accuracy_s,
            "unlinkability": link_s,
            "total": total_s,
            "key_create_or_load_ms": key_ms,
            "protect_one_probe_us": protect_us,
        },
        "machine": describe_machine(),
        "protection": f"devicebio.protect {ALGORITHM}, one key per enrolment",
    }
    print_table(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


def print_table(r: dict[str, Any]) -> None:
    acc = r["accuracy"]
    print(
        f"\nLFW folds {r['folds']}: {r['pairs']} pairs, {r['images']} images "
        f"({r['no_face_images']} without a face)"
    )
    print(f"{'':<28}{'10-fold acc':>14}{'TAR@FAR1e-3':>14}{'EER':>10}")
    for name in ("raw", "protected"):
        a = acc[name]
        print(
            f"{name:<28}{100 * a['accuracy_mean']:>13.3f}%{100 * a['tar_at_far_1e-3']:>13.3f}%"
            f"{100 * a['eer']:>9.3f}%"
        )
    print(
        f"{'difference (pp)':<28}{acc['accuracy_diff_pp']:>14.4f}{acc['tar_diff_pp']:>14.4f}"
        f"{acc['eer_diff_pp']:>10.4f}"
    )
    print(f"max |distance change| over all pairs: {acc['max_abs_distance_change']:.2e}")
    u = r["unlinkability"]
    print(
        f"\nUnlinkability D<->sys (omega = 1): {u['mated_pairs']} mated, "
        f"{u['nonmated_pairs']} non-mated comparisons"
    )
    print(f"{'attacker':<30}{'histogram':>10}{'KDE':>8}{'floor':>8}{'p95':>7}{'bins':>6}")
    for label, s in u["attackers"].items():
        print(
            f"{label:<30}{s['dsys_hist']:>10.3f}{s['dsys_kde']:>8.3f}"
            f"{s['dsys_floor_hist']:>8.3f}{s['dsys_floor_hist_p95']:>7.3f}{s['bins']:>6}"
        )
    sec = r["seconds"]
    print(
        f"\ntime: embedding {sec['embedding']:.0f} s, accuracy {sec['accuracy']:.1f} s, "
        f"unlinkability {sec['unlinkability']:.1f} s, total {sec['total']:.0f} s "
        f"(load average {r['machine']['load_average']}); a key costs "
        f"{sec['key_create_or_load_ms']:.1f} ms "
        f"to create or load, protecting a probe {sec['protect_one_probe_us']:.0f} us"
    )


if __name__ == "__main__":
    raise SystemExit(main())
