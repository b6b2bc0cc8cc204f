"""The chance that a recorded liveness performance answers a fresh challenge's plan.

A replay (frames and timestamps recorded for one challenge, played against another) passes
the active checks only if (1) the fresh plan asks the same prompts in the same order (any
other gesture first is ``wrong_order``; a blink step waits for a blink the recording does not
have there) and (2) at every step the recorded response lands inside the fresh prompt's
window: the fresh prompt is shown ``d'`` after the previous response, the recorded response
came ``d + L`` after it (its own delay plus the recorded person's latency), so the fresh
latency ``d + L - d'`` must lie in [``min_reaction_s``, ``window_s``] (earlier is
``early_response``, later ``prompt_timeout``).

(1) is computed exactly from :func:`devicebio.protocol.liveness_plan`'s derivation (the byte
arithmetic, the no-repeat rule and the at-least-one-turn redraw); (2) exactly over the
delay grid (every 10 ms value and its probability under the 16-bit modulo), with the
response latency ``L`` distributed as measured on the evaluation's genuine sessions
(piecewise uniform between the quantiles given by ``--latency``; default: 199 responses of
40 sessions, seed 21: min 0.42 s, median 0.85 s, p90 1.35 s, max 1.94 s). Steps are
independent given the plan (each fresh delay is drawn afresh), so (2) is a product.

Run::

    PYTHONPATH=$PWD python benchmarks/replay_odds.py [--steps 6] [--v1]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence

import numpy as np

PROMPTS = 4  # turn_left, turn_right, look_up, blink
TURNS = {0, 1}


def sequence_distribution(steps: int) -> dict[tuple[int, ...], float]:
    """P(prompt sequence) under the derivation: the first prompt is ``byte % 4`` of 4, each
    later one ``byte % 3`` of the 3 that differ from the previous (bytes uniform), redrawn
    while the plan has no head turn."""
    first = np.bincount(np.arange(256) % PROMPTS, minlength=PROMPTS) / 256.0
    later = np.bincount(np.arange(256) % 3, minlength=3) / 256.0
    out: dict[tuple[int, ...], float] = {}
    for seq in itertools.product(range(PROMPTS), repeat=steps):
        if any(a == b for a, b in itertools.pairwise(seq)):
            continue
        p = first[seq[0]]
        for prev, cur in itertools.pairwise(seq):
            choices = [q for q in range(PROMPTS) if q != prev]
            p *= later[choices.index(cur)]
        out[seq] = float(p)
    turnless = sum(p for s, p in out.items() if not TURNS & set(s))
    return {s: p / (1.0 - turnless) for s, p in out.items() if TURNS & set(s)}


def delay_distribution(min_ms: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Delay values (s) and their probabilities: ``min + (16-bit value % steps) * 10 ms``."""
    counts = np.bincount(np.arange(65536) % steps, minlength=steps)
    return (min_ms + 10 * np.arange(steps)) / 1000.0, counts / 65536.0


def latency_cdf(quantiles: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    probs, values = zip(*quantiles, strict=True)
    return np.asarray(values, float), np.asarray(probs, float)


def step_timing(
    delays: np.ndarray, pd: np.ndarray, lat: tuple[np.ndarray, np.ndarray], window: float, mn: float
) -> float:
    """P(d + L - d' in [mn, window]) for d, d' independent from the delay grid."""
    values, probs = lat

    def cdf(x: np.ndarray) -> np.ndarray:
        return np.interp(x, values, probs, left=0.0, right=1.0)

    d, dp = np.meshgrid(delays, delays, indexing="ij")
    w = np.outer(pd, pd)
    # L in [d' - d + mn, d' - d + window]
    p = cdf(dp - d + window) - cdf(dp - d + mn)
    return float(np.sum(w * p))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--v1", action="store_true", help="liveness plan v1: 5 steps, 0.4-2.4 s, 3 s")
    ap.add_argument(
        "--latency",
        default="0:0.42,0.5:0.85,0.9:1.35,1:1.94",
        help="response latency quantiles p:seconds (measured; see the module doc)",
    )
    args = ap.parse_args(argv)
    import importlib

    from devicebio.liveness import LivenessConfig

    # the module, not the function devicebio.protocol re-exports under the same name
    lp = importlib.import_module("devicebio.protocol.liveness_plan")

    if args.v1:
        steps, min_ms, nsteps, window = 5, 400, 201, 3.0
    else:
        steps, min_ms, nsteps, window = (
            lp.DEFAULT_STEPS,
            lp._DELAY_MIN_MS,
            lp._DELAY_STEPS,
            lp._WINDOW_MS / 1000.0,
        )
    mn = LivenessConfig().min_reaction_s
    quant = [tuple(float(v) for v in q.split(":")) for q in args.latency.split(",")]
    dist = sequence_distribution(steps)
    probs = np.array(list(dist.values()))
    same = float(np.sum(probs**2))
    worst = float(probs.max())
    delays, pd = delay_distribution(min_ms, nsteps)
    per_step = step_timing(delays, pd, latency_cdf(quant), window, mn)  # type: ignore[arg-type]
    timing = per_step**steps
    print(
        f"plan: {steps} steps, delays {delays[0]:.2f}-{delays[-1]:.2f} s, window {window:.1f} s,"
        f" min reaction {mn:.1f} s"
    )
    print(f"prompt sequences: {len(dist)}; P(fresh plan repeats a recorded order):")
    print(f"  averaged over recorded orders {same:.3e} (1 in {1 / same:,.0f})")
    print(f"  for the likeliest recorded order {worst:.3e} (1 in {1 / worst:,.0f})")
    print(f"P(one step's recorded response lands in the fresh window) = {per_step:.4f}")
    print(f"P(all {steps} do) = {timing:.3e}")
    total, total_worst = same * timing, worst * timing
    print(
        f"P(a recording answers a fresh plan) = {total:.2e} (1 in {1 / total:,.0f}); "
        f"likeliest order {total_worst:.2e} (1 in {1 / total_worst:,.0f})"
    )
    for n in (50, 1000):
        print(f"  P(0 accepted in {n}) = {(1 - total) ** n:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
