"""Simulated genuine users: the people in the annotated footage, and a performer who answers
each prompt as it is shown with one of that person's real clips (see the package docstring)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicebio.evaluation.liveness.annotation import PROMPT_LABELS, Annotation
from devicebio.evaluation.liveness.footage import FrameCache
from devicebio.sources import Frame

REACTION_S = (0.3, 0.8)  # a human's reaction time to a prompt, seconds


@dataclass(frozen=True)
class Clip:
    video: str
    frames: tuple[int, ...]
    flip: bool = False  # the horizontal mirror image (a left turn becomes a right turn)

    def refs(self) -> list[tuple[str, int, bool]]:
        return [(self.video, i, self.flip) for i in self.frames]


@dataclass
class Person:
    name: str
    fps: float
    neutral: list[Clip] = field(default_factory=list)
    responses: dict[str, list[Clip]] = field(default_factory=dict)
    mirrored: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.neutral) and all(self.responses.get(p) for p in PROMPT_LABELS)

    def can_answer(self, prompts: Sequence[str]) -> bool:
        return bool(self.neutral) and all(self.responses.get(p) for p in prompts)


def build_people(ann: Annotation, *, mirror: bool = True) -> dict[str, Person]:
    people: dict[str, Person] = {}
    for seg in ann.segments:
        fps = float(ann.videos[seg.video]["fps"])
        person = people.setdefault(seg.person, Person(seg.person, fps))
        clip = Clip(seg.video, tuple(seg.frames))
        if seg.label == "neutral":
            person.neutral.append(clip)
        else:
            person.responses.setdefault(seg.label, []).append(clip)
    if mirror:
        for person in people.values():
            for a, b in (("turn_left", "turn_right"), ("turn_right", "turn_left")):
                if person.responses.get(a) and not person.responses.get(b):
                    person.responses[b] = [
                        Clip(c.video, c.frames, True) for c in person.responses[a]
                    ]
                    person.mirrored.append(b)
    return people


Ref = tuple[str, int, bool]


class Performer:
    """A person in front of the camera who answers each prompt as it is shown.

    Iterating yields camera frames; ``on_prompt`` (given to ``ActiveLiveness.run``) tells the
    performer a prompt appeared. ``swap_at`` > 0 hands over to ``other`` when that many
    prompts have been shown (the face-swap attack). Every yielded frame is recorded as a
    reference (video, index, flip) and a timestamp so a session can be replayed.
    """

    def __init__(
        self,
        cache: FrameCache,
        person: Person,
        rng: np.random.Generator,
        horizon_s: float,
        *,
        other: Person | None = None,
        swap_at: int = 0,
    ) -> None:
        self.cache = cache
        self.actor = person
        self.other = other
        self.swap_at = swap_at
        self.rng = rng
        self.fps = person.fps
        self.horizon_s = horizon_s
        self.prompts_seen = 0
        self.t = 0.0
        self.pending: list[tuple[float, str]] = []
        self.record: list[Ref] = []
        self.stamps: list[float] = []
        self._neutral = self._neutral_stream(person)

    def _neutral_stream(self, person: Person) -> Iterator[Ref]:
        # ping-pong through one neutral range: a still-ish person with natural micro-motion
        clip = person.neutral[int(self.rng.integers(len(person.neutral)))]
        refs = clip.refs()
        seq = refs + refs[-2:0:-1] if len(refs) > 2 else refs
        pos = int(self.rng.integers(len(seq)))
        while True:
            yield seq[pos % len(seq)]
            pos += 1

    def on_prompt(self, step: Any) -> None:
        self.prompts_seen += 1
        if self.other is not None and self.prompts_seen == self.swap_at + 1:
            self.actor = self.other
            self._neutral = self._neutral_stream(self.other)
        reaction = float(self.rng.uniform(*REACTION_S))
        self.pending.append((self.t + reaction, str(getattr(step.prompt, "value", step.prompt))))

    def __iter__(self) -> Iterator[Frame]:
        playing: list[Ref] = []
        step = 1.0 / self.fps
        n = 0
        while self.t <= self.horizon_s:
            if not playing and self.pending and self.t >= self.pending[0][0]:
                _, label = self.pending.pop(0)
                clips = self.actor.responses.get(label) or []
                if clips:
                    playing = clips[int(self.rng.integers(len(clips)))].refs()
            ref = playing.pop(0) if playing else next(self._neutral)
            self.record.append(ref)
            self.stamps.append(self.t)
            yield Frame(self.cache.get(*ref), self.t)
            n += 1
            self.t = n * step


def horizon(plan: Sequence[Any]) -> float:
    """How long a simulated presentation of ``plan`` runs: every step's delay and window, + 3 s."""
    return 3.0 + sum(float(s.delay_s) + float(s.window_s) for s in plan)


def prompt_labels(plan: Sequence[Any]) -> list[str]:
    return [str(getattr(st.prompt, "value", st.prompt)) for st in plan]
