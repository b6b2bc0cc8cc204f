"""Verification metrics over distances (LOWER distance = more alike; accept when d < threshold)."""

from __future__ import annotations

import numpy as np


def accuracy_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> float:
    correct = np.count_nonzero(genuine < threshold) + np.count_nonzero(impostor >= threshold)
    return correct / (len(genuine) + len(impostor))


def best_threshold(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The threshold with the highest accuracy (midpoint between neighbouring distances)."""
    values = np.unique(np.concatenate([genuine, impostor]))
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0.0
    candidates = np.concatenate(
        [[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]]
    )
    g = np.sort(genuine)
    i = np.sort(impostor)
    accepted_g = np.searchsorted(g, candidates, side="left")  # genuine < t
    rejected_i = len(i) - np.searchsorted(i, candidates, side="left")  # impostor >= t
    return float(candidates[int(np.argmax(accepted_g + rejected_i))])


def kfold_accuracy(
    genuine_folds: list[np.ndarray], impostor_folds: list[np.ndarray]
) -> tuple[list[float], list[float]]:
    """LFW protocol: each fold's threshold is chosen on the other folds. (accuracies, thresholds)"""
    accs, thresholds = [], []
    for k in range(len(genuine_folds)):
        others = [j for j in range(len(genuine_folds)) if j != k]
        if others:
            t = best_threshold(
                np.concatenate([genuine_folds[j] for j in others]),
                np.concatenate([impostor_folds[j] for j in others]),
            )
        else:
            t = best_threshold(genuine_folds[k], impostor_folds[k])
        thresholds.append(t)
        accs.append(accuracy_at(genuine_folds[k], impostor_folds[k], t))
    return accs, thresholds


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The largest threshold whose false-accept rate is at most ``far``."""
    i = np.sort(impostor)
    allowed = int(np.floor(far * len(i)))  # impostors that may fall below the threshold
    if allowed >= len(i):
        return float("inf")
    return float(i[allowed])  # d < i[allowed] accepts exactly `allowed` impostors (ties aside)


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    t = threshold_at_far(impostor, far)
    return float(np.count_nonzero(genuine < t) / len(genuine))


def rates_at(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at a threshold."""
    far = np.count_nonzero(impostor < threshold) / len(impostor)
    frr = np.count_nonzero(genuine >= threshold) / len(genuine)
    return float(far), float(frr)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, the threshold where FAR and FRR cross)."""
    finite = np.concatenate([genuine, impostor])
    finite = np.unique(finite[np.isfinite(finite)])
    best = (1.0, 0.0)
    best_gap = 2.0
    for t in finite:
        far, frr = rates_at(genuine, impostor, float(t))
        if abs(far - frr) < best_gap:
            best_gap, best = abs(far - frr), ((far + frr) / 2, float(t))
    return best
