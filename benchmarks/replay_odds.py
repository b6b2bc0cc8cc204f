"""The chance that a recorded liveness performance answers a fresh challenge's plan.

A replay (frames and timestamps recorded for one challenge, played against another) passes
the active checks only if (1) the fresh plan asks the same prompts in the same order (any
other gesture first is ``wrong_order``; a blink step waits for a blink the recording does not
have there, unless it blinks unprompted: see below) and (2) at every step the recorded
response lands inside the fresh prompt's window: the fresh prompt is shown ``d'`` after
the previous response, the recorded response came ``d + L`` after it (its own delay plus the
recorded person's latency), so the fresh latency ``d + L - d'`` must lie in
[``min_reaction_s``, ``window_s``] (earlier is ``early_response``, later ``prompt_timeout``).

(1) is computed exactly from :func:`devicebio.protocol.liveness_plan`'s derivation (the byte
arithmetic, the no-repeat rule and the at-least-one-turn redraw); (2) exactly over the
delay grid (every 10 ms value and its probability under the 16-bit modulo), with the
response latency ``L`` distributed as measured on the evaluation's genuine sessions
(piecewise uniform between the quantiles given by ``--latency``; default: 199 responses of
40 sessions, seed 21: min 0.42 s, median 0.85 s, p90 1.35 s, max 1.94 s). Steps are
independent given the plan (each fresh delay is drawn afresh), so (2) is a product.

Blinks bind less than that. A blink is never ``wrong_order`` (people blink unprompted) and
the eyes are only read during a blink step, so a recorded blink that falls in a fresh turn
step is skipped, and a fresh blink step is answered by ANY blink inside its window, including
one the recorded person made unprompted. A skipped blink is a dead end unless the recording
holds an extra blink: every fresh step consumes one recorded response, and the recording has
exactly as many as the plan. :func:`blink_aware` computes the chance with both effects by
walking the product's step rules over the recorded timeline (Monte Carlo over the delays,
latencies and unprompted blinks at ``--blink-rate`` per second, exact over the prompt orders:
only fresh orders whose head gestures are a prefix of the recorded ones can pass).

Run::

    PYTHONPATH=$PWD python benchmarks/replay_odds.py [--v1] [--blink-rate 0,0.1,0.3]
"""

from __future__ import annotations

import argparse
import itertools
import math
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


BLINK = 3


def _gestures(seq: Sequence[int]) -> tuple[int, ...]:
    return tuple(q for q in seq if q != BLINK)


def replay_walk(
    recorded: Sequence[int],
    rec_delays: Sequence[float],
    latencies: Sequence[float],
    fresh: Sequence[int],
    fresh_delays: Sequence[float],
    spontaneous: Sequence[float],
    window: float,
    mn: float,
) -> tuple[int, str]:
    """The step rules of ActiveLiveness over a recording's events (times from the end of
    the neutral baseline): a head gesture is an onset that must be the current step's prompt,
    at least ``mn`` after it was shown and inside its window (else early / wrong order /
    timeout); a blink answers a blink step inside its window and is ignored otherwise.
    Returns the fresh steps done and the outcome (``accepted`` or the refusal reason)."""
    events: list[tuple[float, int]] = []
    t = 0.0
    for prompt, d, lat in zip(recorded, rec_delays, latencies, strict=True):
        t += d + lat
        events.append((t, prompt))
    events += [(b, BLINK) for b in spontaneous]
    events.sort()
    done_at, k = 0.0, 0
    for step, (prompt, d) in enumerate(zip(fresh, fresh_delays, strict=True)):
        shown = done_at + d
        answered = None
        while k < len(events) and events[k][0] <= shown + window:
            at, what = events[k]
            k += 1
            if at <= done_at:
                continue
            if what == BLINK:
                if prompt == BLINK and at >= shown + mn:
                    answered = at
                    break
                continue  # a blink outside a blink step, or too early: ignored
            if at < shown + mn:
                return step, "early_response"
            if what != prompt:
                return step, "wrong_order"
            answered = at
            break
        if answered is None:
            return step, "prompt_timeout"
        done_at = answered
    return len(fresh), "accepted"


def blink_aware(
    dist: dict[tuple[int, ...], float],
    delays: np.ndarray,
    pd: np.ndarray,
    lat: tuple[np.ndarray, np.ndarray],
    window: float,
    mn: float,
    blink_rate: float,
    trials: int = 200_000,
    seed: int = 1,
) -> tuple[float, float]:
    """P(a recording answers a fresh plan) with blinks as the product treats them, and its
    Monte Carlo standard error. Each trial draws a recorded order (by its probability) and a
    fresh order among those whose head gestures are a prefix of the recorded ones (weighted by
    that set's probability: the other fresh orders fail on a gesture), then delays,
    latencies and unprompted blinks, and runs the step rules."""
    rng = np.random.default_rng(seed)
    seqs = list(dist)
    probs = np.array([dist[q] for q in seqs])
    gestures = [_gestures(q) for q in seqs]
    values, qs = lat
    compatible: list[tuple[list[int], np.ndarray, float]] = []
    for g in gestures:
        fits = [j for j, h in enumerate(gestures) if g[: len(h)] == h]
        w = probs[fits]
        compatible.append((fits, np.cumsum(w) / w.sum(), float(w.sum())))
    steps = len(seqs[0])
    picks = np.searchsorted(np.cumsum(probs), rng.uniform(size=trials) * probs.sum())
    u_fit = rng.uniform(size=trials)
    cpd = np.cumsum(pd)
    d_rec = delays[np.minimum(np.searchsorted(cpd, rng.uniform(size=(trials, steps))), len(pd) - 1)]
    d_new = delays[np.minimum(np.searchsorted(cpd, rng.uniform(size=(trials, steps))), len(pd) - 1)]
    latency = np.interp(rng.uniform(size=(trials, steps)), qs, values)
    spans = (d_rec + latency).sum(axis=1) + window
    counts = rng.poisson(blink_rate * spans) if blink_rate > 0 else np.zeros(trials, int)
    total = np.zeros(trials)
    for n in range(trials):
        fits, cw, mass = compatible[int(picks[n])]
        f = seqs[fits[min(int(np.searchsorted(cw, u_fit[n])), len(fits) - 1)]]
        blinks = rng.uniform(0.0, spans[n], size=int(counts[n])) if counts[n] else ()
        r = seqs[int(picks[n])]
        if replay_walk(r, d_rec[n], latency[n], f, d_new[n], blinks, window, mn)[1] == "accepted":
            total[n] = mass
    return float(total.mean()), float(total.std() / math.sqrt(trials))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--v1", action="store_true", help="liveness plan v1: 5 steps, 0.4-2.4 s, 3 s")
    ap.add_argument(
        "--latency",
        default="0:0.42,0.5:0.85,0.9:1.35,1:1.94",
        help="response latency quantiles p:seconds (measured; see the module doc)",
    )
    ap.add_argument(
        "--blink-rate",
        default="0,0.1,0.3",
        help="unprompted blinks per second in the recording, comma-separated (0: only the "
        "recorded responses; people at rest blink about 0.2-0.3 per second)",
    )
    ap.add_argument("--trials", type=int, default=200_000, help="Monte Carlo trials per rate")
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
    print("with blinks as the product treats them (skipped outside blink steps, any blink")
    print("answers a blink step), Monte Carlo, seed 1:")
    lat = latency_cdf(quant)  # type: ignore[arg-type]
    for rate in (float(x) for x in args.blink_rate.split(",")):
        p, se = blink_aware(dist, delays, pd, lat, window, mn, rate, args.trials)
        print(
            f"  unprompted blinks {rate:.2f}/s: P = {p:.2e} +- {1.96 * se:.1e} (95%)"
            + (f" (1 in {1 / p:,.0f}); x{p / total:.1f} the order-and-timing figure" if p else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
