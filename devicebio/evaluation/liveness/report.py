"""The ISO/IEC 30107-3 report: outcomes tallied per presentation kind and per person, APCER per
attack species, BPCER, durations, the operating point, and the machine it ran on."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicebio.evaluation.liveness.performers import Person
from devicebio.evaluation.machine import describe_machine


@dataclass
class Tally:
    presented: int = 0
    accepted: int = 0
    live: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    accepted_durations: list[float] = field(default_factory=list)

    def add(self, accepted: bool, reason: str, duration: float, live: bool = False) -> None:
        self.presented += 1
        self.accepted += int(accepted)
        self.live += int(live)
        self.reasons[reason] += 1
        self.durations.append(duration)
        if accepted:
            self.accepted_durations.append(duration)


@dataclass(frozen=True)
class Outcome:
    kind: str
    person: str  # the enrolled (claimed) person; "lfw" for photo attacks
    accepted: bool
    reason: str
    duration_s: float
    redraws: int = 0
    live: bool = False  # the liveness check alone passed it (the APCER of the PAD subsystem)
    steps: int = 0  # plan steps the liveness check saw answered
    # replays only: how many leading prompts the fresh plan shares with the recorded one
    common: int | None = None
    same_order: bool = False  # replays only: every prompt, in the recorded order


def summarise(
    outcomes: Iterable[Outcome],
    *,
    species: Sequence[str],
    people: dict[str, Person],
    complete: list[str],
    cast: list[str],
    seed: int | None,
    workers: int,
    decode_s: float | None,
    started: float,
    pad: Sequence[str] = (),
    real_recaptures: dict[str, Any] | None = None,
    replay_challenges: int = 1,
) -> dict[str, Any]:
    """The report of one run (``started``: its ``time.perf_counter()`` at the start)."""
    from devicebio import decision
    from devicebio.evaluation import metrics

    tallies: dict[str, Tally] = {"genuine": Tally(), **{s: Tally() for s in species}}
    per_person: dict[str, Tally] = {}
    redraws: Counter[str] = Counter()
    seen = list(outcomes)
    for o in seen:
        tallies[o.kind].add(o.accepted, o.reason, o.duration_s, o.live)
        redraws[o.kind] += o.redraws
        if o.kind == "genuine":
            per_person.setdefault(o.person, Tally()).add(o.accepted, o.reason, o.duration_s)

    genuine = tallies["genuine"]
    binding = replay_binding([o for o in seen if o.kind == "replay" and o.common is not None])

    def rate(t: Tally) -> float | None:
        return t.accepted / t.presented if t.presented else None

    report: dict[str, Any] = {
        "standard": "ISO/IEC 30107-3: APCER per PAI species, BPCER",
        "bpcer": (
            (genuine.presented - genuine.accepted) / genuine.presented
            if genuine.presented
            else None
        ),
        "apcer": {s: rate(tallies[s]) for s in species},
        # the same with exact 95% intervals: APCER counts what the liveness check passed,
        # IAPMR what the whole decision accepted (liveness AND the enrolled face matched)
        "bpcer_ci": metrics.rate(genuine.presented - genuine.accepted, genuine.presented),
        "apcer_ci": {s: metrics.rate(tallies[s].live, tallies[s].presented) for s in species},
        "iapmr_ci": {s: metrics.rate(tallies[s].accepted, tallies[s].presented) for s in species},
        "pad": list(pad),
        "real_recaptures": real_recaptures,
        "replay_challenges": replay_challenges,
        "replay_binding": binding,
        "apcer_max": max((r for s in species if (r := rate(tallies[s])) is not None), default=None),
        "sessions": {k: t.presented for k, t in tallies.items()},
        "accepted": {k: t.accepted for k, t in tallies.items()},
        "reasons": {k: dict(t.reasons.most_common()) for k, t in tallies.items()},
        "genuine_duration_s_median": (
            statistics.median(genuine.durations) if genuine.durations else None
        ),
        "genuine_accepted_duration_s_median": (
            statistics.median(genuine.accepted_durations) if genuine.accepted_durations else None
        ),
        "genuine_duration_s_p90": (
            float(np.percentile(genuine.durations, 90)) if genuine.durations else None
        ),
        "people": {
            n: {
                "segments": {k: len(v) for k, v in p.responses.items()}
                | {"neutral": len(p.neutral)},
                "mirrored": p.mirrored,
                "complete": p.complete,
                "fps": p.fps,
            }
            for n, p in sorted(people.items())
        },
        "people_with_every_prompt": complete,
        "genuine_people": cast,
        "bpcer_per_person": {
            n: {
                "sessions": t.presented,
                "bpcer": (t.presented - t.accepted) / t.presented if t.presented else None,
                "reasons": dict(t.reasons.most_common()),
            }
            for n, t in sorted(per_person.items())
        },
        "challenges_redrawn_to_fit_footage": dict(redraws),
        "operating_point": decision.Policy.of().operating_point,
        "match_threshold": decision.Policy.of().threshold,
        "identity_threshold": decision.Policy.of().same_person,
        "seed": seed,
        "workers": workers,
        "decode_seconds": decode_s,
        "seconds_total": time.perf_counter() - started,
        "machine": describe_machine(),
    }
    return report


def replay_binding(replays: Sequence[Outcome]) -> dict[str, Any] | None:
    """What the challenge binding did to the replays, in the two parts benchmarks/replay_odds.py
    computes. Order: replays whose fresh plan asks the recorded prompts in the recorded order
    (all of them: ``same_order``). Timing: a step whose fresh prompt is the recorded one is a
    timing trial, passed when the liveness check accepted that response; a replay stops at its
    first failed step, so the trials are the steps done plus one for each replay that stopped
    inside the common prefix. ``beyond_common`` counts replays that got further than the
    prompts the two plans share: a recorded blink that falls in a fresh turn step is ignored
    (blinks are never wrong), so the next recorded turn may answer it; a dead end unless the
    recording blinks once more (benchmarks/replay_odds.py, ``--blink-rate``)."""
    if not replays:
        return None
    from devicebio.evaluation import metrics

    done = sum(o.steps for o in replays)
    failed = sum(1 for o in replays if o.common is not None and o.steps < o.common)
    return {
        "presentations": len(replays),
        "same_order": metrics.rate(sum(o.same_order for o in replays), len(replays)),
        "timing_steps_passed": metrics.rate(done, done + failed),
        "beyond_common": sum(1 for o in replays if o.steps > (o.common or 0)),
        "steps_done": dict(sorted(Counter(o.steps for o in replays).items())),
    }


def format_table(report: dict[str, Any]) -> str:
    """The readable ISO/IEC 30107-3 table."""
    lines = [
        f"{'presentation':<27}{'n':>6}{'accepted':>10}{'rate':>9}  top refusal reasons",
    ]
    rows = [("genuine (BPCER)", "genuine")] + [(s + " (APCER)", s) for s in report["apcer"]]
    for title, key in rows:
        n = report["sessions"].get(key, 0)
        acc = report["accepted"].get(key, 0)
        rate = (n - acc) / n if key == "genuine" and n else (acc / n if n else float("nan"))
        reasons = ", ".join(
            f"{r} {c}"
            for r, c in list(report["reasons"].get(key, {}).items())[:3]
            if r != "accepted"
        )
        lines.append(f"{title:<27}{n:>6}{acc:>10}{rate:>9.2%}  {reasons}")
    med = report.get("genuine_duration_s_median")
    if med is not None:
        lines.append(f"median genuine session: {med:.2f} s")
    ci = report.get("iapmr_ci") or {}
    for key, r in ci.items():
        if r.get("trials"):
            lo, hi = r["ci95"]
            lines.append(
                f"{key}: IAPMR {r['errors']}/{r['trials']} [{lo:.2%}, {hi:.2%}], liveness "
                f"passed {report['apcer_ci'][key]['errors']}/{r['trials']}"
            )
    b = report.get("bpcer_ci") or {}
    if b.get("trials"):
        lines.append(f"BPCER {b['errors']}/{b['trials']} [{b['ci95'][0]:.2%}, {b['ci95'][1]:.2%}]")
    rb = report.get("replay_binding")
    if rb:
        same, timing = rb["same_order"], rb["timing_steps_passed"]
        lines.append(
            f"replay binding: same prompt order {same['errors']}/{same['trials']}; recorded "
            f"responses inside the fresh window {timing['errors']}/{timing['trials']} steps; "
            f"beyond the shared prompts {rb['beyond_common']}"
        )
    lines.append(f"PAD: {', '.join(report.get('pad') or ['none (active checks only)'])}")
    real = report.get("real_recaptures")
    if real:
        for label in ("bona_fide", "screen_replay", "print"):
            g = real.get(label)
            if not g:
                continue
            r = g.get("bpcer") or g.get("apcer")
            name = "BPCER" if label == "bona_fide" else "APCER"
            lines.append(
                f"real {label}: {name} {r['errors']}/{r['trials']} "
                f"[{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}] ({g['people']} people, "
                f"{g['screens']} screens, {g['sources']} sources; anecdote)"
            )
    lines.append(f"run time: {report['seconds_total']:.0f} s")
    return "\n".join(lines)
