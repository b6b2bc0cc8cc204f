"""benchmarks/replay_odds.py, the computation docs/evaluation.md quotes for the replay binding:
its walk of the product's step rules over a recording, on the case the evaluation found."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

np = pytest.importorskip("numpy", reason="the odds computation needs numpy")

L, R, U, B = 0, 1, 2, 3  # turn_left, turn_right, look_up, blink: the benchmark's codes
MN, WINDOW = 0.3, 2.5  # LivenessConfig.min_reaction_s, plan v2's window


@pytest.fixture(scope="module")
def odds() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "replay_odds.py"
    spec = importlib.util.spec_from_file_location("replay_odds", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_walk_repeats_what_the_product_did_to_the_seed_13_replay(odds: ModuleType) -> None:
    """docs/evaluation.md, seed 13: d3's recording of L B R L B R against the fresh plan
    L R B U L B. The product completed 2 steps and refused ``wrong_order``: the recorded blink
    fell in the fresh turn_right step (ignored: blinks are never wrong), the recorded right
    turn answered it inside its window, then the recorded left turn came while a blink was
    asked. Delays are the two plans'; the latencies are the trace's (the fourth only bounded
    by it: that onset came inside the fresh blink's window; the last two are never reached)."""
    recorded = [L, B, R, L, B, R]
    rec_delays = [1.40, 0.84, 1.31, 2.98, 2.96, 2.28]
    latencies = [0.733, 1.05, 0.933, 0.75, 0.9, 0.8]
    fresh = [L, R, B, U, L, B]
    fresh_delays = [1.61, 1.75, 1.27, 0.95, 1.02, 0.75]
    walk = odds.replay_walk(recorded, rec_delays, latencies, fresh, fresh_delays, (), WINDOW, MN)
    assert walk == (2, "wrong_order")


def test_a_skipped_blink_is_a_dead_end_unless_the_recording_blinks_again(odds: ModuleType) -> None:
    """Every fresh step consumes one recorded response and the recording has as many as the
    plan, so skipping one leaves too few; one unprompted blink in the recording at the right
    time makes up for it, and a plan that differs from the recorded one then passes. This is
    what the order-and-timing figure leaves out and ``--blink-rate`` adds."""
    recorded = [L, B, R, L, R, L]  # responses at 1.8, 3.6, 5.4, 7.2, 9.0, 10.8 s
    rec = dict(rec_delays=[1.0] * 6, latencies=[0.8] * 6)
    fresh = [L, R, B, L, R, L]
    fresh_delays = [1.0, 2.0, 0.5, 0.4, 1.0, 1.0]

    def walk(blinks: tuple[float, ...]) -> tuple[int, str]:
        return odds.replay_walk(
            recorded, rec["rec_delays"], rec["latencies"], fresh, fresh_delays, blinks, WINDOW, MN
        )

    # the recorded blink falls before the fresh turn_right is shown; the recorded left turn
    # then comes while the fresh plan asks its blink
    assert walk(()) == (2, "wrong_order")
    assert walk((6.2,)) == (6, "accepted")  # an unprompted blink answers the fresh blink
    assert walk((5.6,)) == (2, "wrong_order")  # ... but not before the prompt's reaction time


def test_without_unprompted_blinks_the_walk_agrees_with_the_closed_form(odds: ModuleType) -> None:
    """With no blink beyond the recorded responses only the recorded order can pass, so the
    Monte Carlo must agree with order x timing (5.5e-5 for plan v2) within its error."""
    import importlib

    lp = importlib.import_module("devicebio.protocol.liveness_plan")
    dist = odds.sequence_distribution(lp.DEFAULT_STEPS)
    delays, pd = odds.delay_distribution(lp._DELAY_MIN_MS, lp._DELAY_STEPS)
    lat = odds.latency_cdf([(0.0, 0.42), (0.5, 0.85), (0.9, 1.35), (1.0, 1.94)])
    closed = sum(p * p for p in dist.values()) * odds.step_timing(delays, pd, lat, WINDOW, MN) ** 6
    p, se = odds.blink_aware(dist, delays, pd, lat, WINDOW, MN, 0.0, trials=20_000, seed=3)
    assert abs(p - closed) < 3 * se + 1e-6, (p, se, closed)
