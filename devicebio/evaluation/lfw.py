"""``devicebio eval lfw``: face verification accuracy on a set in LFW's format.

Any folder-per-identity image set works, with a pairs file in LFW's View-2 format: a first
line ``folds n``, then per fold ``n`` same-person lines ``name i j`` followed by ``n``
different-person lines ``name1 i name2 j``; images are ``<dir>/<name>/<name>_<iiii>.jpg``.

Every image goes through the full pipeline (detect, landmarks, align, embed: no pre-cropped
shortcut). An image where no face is found cannot be matched: its pairs count as "different"
(an error for a same-person pair), and the number of such images is reported; no pair is
dropped. Capture-quality gates are not applied to the photos (they judge live capture), but
how many photos each gate would have flagged is reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation import metrics, shared_data
from devicebio.evaluation.machine import describe_machine

ENV_LFW = "DEVICEBIO_LFW"


def default_lfw_dir() -> Path:
    return shared_data("lfw", ENV_LFW)


@dataclass(frozen=True)
class Pair:
    fold: int
    a: str
    b: str
    same: bool


def parse_pairs(path: Path) -> tuple[int, list[Pair]]:
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"cannot read pairs file {path}: {exc}"
        ) from None
    try:
        folds, per = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError):
        raise DeviceBioError(
            Reason.MALFORMED_DATA, "pairs file must start with 'folds n'"
        ) from None
    pairs: list[Pair] = []
    body = lines[1:]
    if len(body) != folds * 2 * per:
        raise DeviceBioError(
            Reason.MALFORMED_DATA,
            f"pairs file has {len(body)} pairs, header says {folds * 2 * per}",
        )
    for n, parts in enumerate(body):
        fold = n // (2 * per)
        try:
            if len(parts) == 3:
                name, i, j = parts
                pairs.append(Pair(fold, _image(name, int(i)), _image(name, int(j)), True))
            elif len(parts) == 4:
                n1, i, n2, j = parts
                pairs.append(Pair(fold, _image(n1, int(i)), _image(n2, int(j)), False))
            else:
                raise ValueError
        except ValueError:
            raise DeviceBioError(
                Reason.MALFORMED_DATA, f"pairs line {n + 2} is malformed"
            ) from None
    return folds, pairs


def _image(name: str, index: int) -> str:
    return f"{name}/{name}_{index:04d}.jpg"


def evaluate(
    images: Path,
    pairs_file: Path,
    *,
    folds: list[int] | None = None,
    detector: str = "fast",
    mirror: bool = True,
    normalize: bool = True,
    progress: bool = True,
    pipeline: Any = None,
) -> dict[str, Any]:
    """Run the evaluation and return the report (see module doc); ``folds`` limits the pairs."""
    import cv2

    from devicebio.vision.pipeline import FaceCapture, FacePipeline

    _n_folds, pairs = parse_pairs(pairs_file)
    if folds is not None:
        pairs = [p for p in pairs if p.fold in folds]
    wanted = sorted({p.a for p in pairs} | {p.b for p in pairs})
    pipe = pipeline or FacePipeline(
        detector=detector,  # type: ignore[arg-type]
        mirror=mirror,
        normalize=normalize,
        progress=progress,
    )

    embeddings: dict[str, np.ndarray] = {}
    no_face: list[str] = []
    flagged: dict[str, int] = {}
    detectors: dict[str, int] = {}
    stage_ms: dict[str, list[float]] = {}
    iterator: Any = wanted
    if progress:
        from tqdm import tqdm

        iterator = tqdm(wanted, desc="embedding images", unit="img")
    started = time.perf_counter()
    for rel in iterator:
        bgr = cv2.imread(str(images / rel), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"cannot read image {images / rel}")
        result = pipe.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), select="center", gates=False)
        if not isinstance(result, FaceCapture):
            no_face.append(rel)
            continue
        embeddings[rel] = result.embedding
        detectors[result.detector] = detectors.get(result.detector, 0) + 1
        for stage, ms in result.timings_ms.items():
            stage_ms.setdefault(stage, []).append(ms)
        verdict = pipe.gate(result.quality)
        if verdict is not None:
            flagged[verdict.code.value] = flagged.get(verdict.code.value, 0) + 1
    elapsed = time.perf_counter() - started

    # One photo against one photo through the product's decision rule (m = k = 1); a pair with
    # an image where no face was found cannot match (distance +inf).
    from devicebio import decision

    found = [p for p in pairs if p.a in embeddings and p.b in embeddings]
    scored = (
        dict(
            zip(
                found,
                decision.paired_fused_distances(
                    np.stack([embeddings[p.a] for p in found])[:, None],
                    np.stack([embeddings[p.b] for p in found])[:, None],
                ).tolist(),
                strict=True,
            )
        )
        if found
        else {}
    )

    def dist(p: Pair) -> float:
        return scored.get(p, float("inf"))

    used_folds = sorted({p.fold for p in pairs})
    g_folds = [np.array([dist(p) for p in pairs if p.fold == f and p.same]) for f in used_folds]
    i_folds = [np.array([dist(p) for p in pairs if p.fold == f and not p.same]) for f in used_folds]
    genuine, impostor = np.concatenate(g_folds), np.concatenate(i_folds)
    accs, fold_thresholds = metrics.kfold_accuracy(g_folds, i_folds)
    eer, eer_threshold = metrics.eer(genuine, impostor)
    default = decision.Policy.of()
    far_d, frr_d = metrics.rates_at(genuine, impostor, default.threshold)
    report: dict[str, Any] = {
        "dataset": str(images),
        "pairs": len(pairs),
        "folds": len(used_folds),
        "images": len(wanted),
        "no_face_images": len(no_face),
        "no_face_list": no_face,
        "accuracy_mean": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "fold_accuracies": accs,
        "fold_thresholds": fold_thresholds,
        "tar_at_far_1e-2": metrics.tar_at_far(genuine, impostor, 1e-2),
        "tar_at_far_1e-3": metrics.tar_at_far(genuine, impostor, 1e-3),
        "threshold_at_far_1e-3": metrics.threshold_at_far(impostor, 1e-3),
        "impostor_pairs": len(impostor),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "default_threshold": default.threshold,
        "default_operating_point": default.operating_point,
        "far_at_default_threshold": far_d,
        "frr_at_default_threshold": frr_d,
        "detector": detector,
        "detector_used": detectors,
        "mirror_averaging": mirror,
        "unit_length": normalize,
        "quality_gates_would_flag": flagged,
        "timings_ms_mean": {k: float(np.mean(v)) for k, v in stage_ms.items()},
        "timings_ms_p50": {k: float(np.median(v)) for k, v in stage_ms.items()},
        "seconds_total": elapsed,
        "machine": describe_machine(),
        "model": pipe.model_id,
        "distance": "euclidean; accept when distance < threshold (lower is stricter)",
    }
    report["_scores"] = (genuine, impostor)
    return report


def write_outputs(report: dict[str, Any], json_out: Path | None, plot_out: Path | None) -> None:
    genuine, impostor = report.pop("_scores")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if plot_out is not None:
        plot(genuine, impostor, report, plot_out)


def plot(genuine: np.ndarray, impostor: np.ndarray, report: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DeviceBioError(
            Reason.DEPENDENCY_MISSING,
            "plots need matplotlib",
            hint="pip install 'devicebio[eval]'",
        ) from None
    g, i = genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]
    thresholds = np.linspace(0, max(g.max(initial=1), i.max(initial=1)), 400)
    far = np.array([np.mean(impostor < t) for t in thresholds])
    frr = np.array([np.mean(genuine >= t) for t in thresholds])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ax1.plot(np.clip(far, 1e-4, 1), np.clip(frr, 1e-4, 1))
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("false accept rate")
    ax1.set_ylabel("false reject rate")
    ax1.set_title(f"DET: {report['pairs']} pairs, EER {report['eer']:.2%}")
    ax1.grid(True, which="both", alpha=0.3)
    bins = np.linspace(0, thresholds[-1], 80)
    ax2.hist(g, bins=bins, alpha=0.6, label="same person", density=True)
    ax2.hist(i, bins=bins, alpha=0.6, label="different people", density=True)
    ax2.axvline(report["default_threshold"], color="k", ls="--", label="default threshold")
    ax2.set_xlabel("distance (lower = more alike)")
    ax2.legend()
    ax2.set_title(f"10-fold accuracy {report['accuracy_mean']:.2%}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
