"""Rates with confidence intervals (devicebio.evaluation.metrics): exact, checked two ways."""

from __future__ import annotations

import numpy as np
import pytest

from devicebio.evaluation import metrics


@pytest.mark.parametrize(
    ("errors", "trials"), [(0, 10), (5, 10), (10, 10), (3, 96_410), (1, 50), (250, 12_000)]
)
def test_clopper_pearson_bounds_are_the_binomial_tail_quantiles(errors: int, trials: int) -> None:
    """The beta-quantile bounds (continued fraction) against the binomial sum: at the lower
    bound P(X >= errors) = 2.5%, at the upper bound P(X <= errors) = 2.5%."""
    lo, hi = metrics.clopper_pearson(errors, trials)
    assert 0.0 <= lo <= errors / trials <= hi <= 1.0
    if errors > 0:
        assert abs((1 - metrics.binomial_cdf(errors - 1, trials, lo)) - 0.025) < 1e-7
    else:
        assert lo == 0.0
    if errors < trials:
        assert abs(metrics.binomial_cdf(errors, trials, hi) - 0.025) < 1e-7
    else:
        assert hi == 1.0


def test_known_values() -> None:
    lo, hi = metrics.clopper_pearson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1871, 0.8129)
    assert abs(metrics.clopper_pearson(0, 10)[1] - (1 - 0.025**0.1)) < 1e-9
    r = metrics.rate(0, 30_000)
    assert r["rate"] == 0.0 and r["rule_of_3"] == pytest.approx(1e-4)


def test_large_trials_are_fast_and_tight() -> None:
    lo, hi = metrics.clopper_pearson(53_000, 16_500_000)  # the per-comparison scale
    assert lo < 53_000 / 16_500_000 < hi and hi - lo < 1e-4


def test_fast_eer_agrees_with_the_exhaustive_one() -> None:
    rng = np.random.default_rng(3)
    genuine, impostor = rng.normal(0.3, 0.05, 400), rng.normal(0.6, 0.07, 900)
    assert metrics.fast_eer(genuine, impostor) == pytest.approx(metrics.eer(genuine, impostor))


def test_threshold_at_fmr_accepts_at_most_the_allowed_impostors() -> None:
    impostor = np.random.default_rng(4).uniform(0.2, 1.0, 100_000)
    for target in (1e-3, 1e-4, 1e-5):
        t = metrics.threshold_at_far(impostor, target)
        assert np.count_nonzero(impostor < t) <= target * len(impostor)
