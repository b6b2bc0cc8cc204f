"""Verification metrics over distances (LOWER distance = more alike; accept when d < threshold)."""

from __future__ import annotations

import math
from typing import Any

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


# ---- rates with confidence intervals (ISO/IEC 19795-1 reporting) ---------------------------
#
# scipy is not a dependency: the Clopper-Pearson bounds are quantiles of beta distributions,
# found here by bisection on the regularized incomplete beta function, which is evaluated by
# its continued fraction (modified Lentz). Exact, and fast enough for millions of trials.


def regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF at ``x`` of a Beta(a, b) distribution (a, b > 0)."""
    if not (a > 0 and b > 0):
        raise ValueError("a and b must be positive")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    # The continued fraction converges fast below the mean; above it, use the symmetry
    # I_x(a, b) = 1 - I_{1-x}(b, a).
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - regularized_beta(1.0 - x, b, a)
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    return math.exp(log_front) * _beta_fraction(x, a, b) / a


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction 1 / (1 + d1 / (1 + d2 / (1 + ...))) of I_x(a, b), evaluated
    front to back (modified Lentz), with d_{2j} = j(b-j)x / ((a+2j-1)(a+2j)) and
    d_{2j+1} = -(a+j)(a+b+j)x / ((a+2j)(a+2j+1))."""
    tiny, eps = 1e-300, 1e-15
    f = c = tiny  # the fraction's leading term is 0
    d = 0.0
    for n in range(0, 400_000):
        if n == 0:
            coef = 1.0  # the numerator of the outermost 1 / (...)
        elif n % 2 == 0:
            j = n // 2
            coef = j * (b - j) * x / ((a + 2 * j - 1) * (a + 2 * j))
        else:
            j = (n - 1) // 2
            coef = -(a + j) * (a + b + j) * x / ((a + 2 * j) * (a + 2 * j + 1))
        d = 1.0 + coef * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + coef / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        f *= c * d
        if n > 0 and abs(c * d - 1.0) < eps:
            return f
    raise ArithmeticError("incomplete beta continued fraction did not converge")


def beta_quantile(p: float, a: float, b: float) -> float:
    """The ``p``-quantile of Beta(a, b), by bisection (60 halvings: below 1e-18)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if regularized_beta(mid, a, b) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-18 or hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def clopper_pearson(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval for a rate of ``errors`` in ``trials``."""
    if trials <= 0 or not 0 <= errors <= trials:
        raise ValueError("need 0 <= errors <= trials and trials > 0")
    alpha = 1.0 - confidence
    lo = 0.0 if errors == 0 else beta_quantile(alpha / 2, errors, trials - errors + 1)
    hi = 1.0 if errors == trials else beta_quantile(1 - alpha / 2, errors + 1, trials - errors)
    return lo, hi


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed term by term in log space (a cross-check of
    the continued fraction; O(k))."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    total = 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    for i in range(0, min(k, n) + 1):
        log_term = (
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * log_p
            + (n - i) * log_q
        )
        total += math.exp(log_term)
    return min(total, 1.0)


def rates_differ_p(errors_a: int, trials_a: int, errors_b: int, trials_b: int) -> float:
    """Two-sided exact p-value that two error rates are equal: given the errors of both, the
    count of group a is Binomial(total errors, trials_a / (trials_a + trials_b)) under equal
    rates (the conditional test, right for rare errors); twice the smaller tail, at most 1."""
    if min(trials_a, trials_b) <= 0:
        raise ValueError("need trials in both groups")
    total = errors_a + errors_b
    if total == 0:
        return 1.0
    share = trials_a / (trials_a + trials_b)
    low = binomial_cdf(errors_a, total, share)
    high = 1.0 - binomial_cdf(errors_a - 1, total, share) if errors_a > 0 else 1.0
    return min(1.0, 2.0 * min(low, high))


def rate(errors: int, trials: int, confidence: float = 0.95) -> dict[str, Any]:
    """A rate as reports give it: the count, the point estimate, the Clopper-Pearson interval
    and, with no errors, the rule-of-three bound (3/n, one-sided 95%)."""
    if trials == 0:
        return {"errors": errors, "trials": 0, "rate": None, "ci95": None}
    out: dict[str, Any] = {
        "errors": int(errors),
        "trials": int(trials),
        "rate": errors / trials,
        "ci95": list(clopper_pearson(int(errors), int(trials), confidence)),
    }
    if errors == 0:
        out["rule_of_3"] = min(1.0, 3.0 / trials)
    return out


def fmr_fnmr(
    genuine: np.ndarray, impostor: np.ndarray, threshold: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(FMR, FNMR) with intervals at ``threshold`` (accept when score < threshold)."""
    false_matches = int(np.count_nonzero(impostor < threshold))
    false_non_matches = int(np.count_nonzero(~(genuine < threshold)))
    return rate(false_matches, len(impostor)), rate(false_non_matches, len(genuine))


def fast_eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, its threshold) by sorting: for millions of impostor scores, where
    :func:`eer`'s loop would take hours. Candidates are every observed score."""
    g = np.sort(genuine[np.isfinite(genuine)])
    i = np.sort(impostor[np.isfinite(impostor)])
    if len(g) == 0 or len(i) == 0:
        return 1.0, 0.0
    candidates = np.unique(np.concatenate([g, i]))
    fmr = np.searchsorted(i, candidates, side="left") / len(impostor)
    fnmr = 1.0 - np.searchsorted(g, candidates, side="left") / len(genuine)
    best = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[best] + fnmr[best]) / 2), float(candidates[best])


def det_curve(
    genuine: np.ndarray, impostor: np.ndarray, points: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FMR, FNMR) on a grid spanning the scores, for a DET plot."""
    g = np.sort(genuine)
    i = np.sort(impostor)
    finite = np.concatenate([g[np.isfinite(g)], i[np.isfinite(i)]])
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 2.0)
    t = np.linspace(lo, hi, points)
    fmr = np.searchsorted(i, t, side="left") / max(len(i), 1)
    fnmr = 1.0 - np.searchsorted(g, t, side="left") / max(len(g), 1)
    return t, fmr, fnmr
