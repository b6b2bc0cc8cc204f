"""``devicebio eval liveness``: active liveness measured the ISO/IEC 30107-3 way.

Genuine presentations are simulated users built from real footage: each annotated clip in
``video_segments.json`` (frame ranges of real videos: neutral, turn_left, turn_right, look_up,
blink) is a piece of a real performance. A :class:`_Performer` yields the person's neutral
frames as a camera would, and when the liveness check shows a prompt (its ``on_prompt``
callback) the performer answers it after a human reaction time of 0.3-0.8 s with one of that
same person's clips for that prompt, then goes back to neutral. Timestamps advance at the
video's own frame rate. Every prompt of a session is answered by ONE person's footage. A
person with a turn in only one direction answers the other direction with the horizontal
mirror image of their own turn (a mirrored real head turn is still a real 3-D head; reported
as ``mirrored`` in the person summary). Only one person in the footage shows every prompt
type (tvl); the others lack a blink or a look-up on camera, so they take part only in
sessions whose challenge asks nothing they cannot show: for them the challenge is redrawn
until its plan fits (counted in ``challenges_redrawn_to_fit_footage``). The plan itself is
never edited: every session runs ``liveness_plan`` of the challenge actually presented.
Enrolment is the person's own neutral frames.

Attacks, each its own presentation-attack-instrument species:

* ``still_photo``: an LFW photo held still in front of the camera (sensor noise only);
* ``moving_photo``: the same with hand tremor (smooth in-plane shift, rotation, scale);
* ``rotated_photo``: a best-effort attacker who answers each prompt by tilting the flat print
  in 3-D (a perspective warp timed to the prompts, as the performer times its clips);
* ``replay``: a recorded genuine session (frames and timestamps) played against a fresh
  challenge;
* ``identity_mismatch``: another person's genuine footage answering the plan correctly;
* ``face_swap``: the enrolled person for the first prompts, another person for the rest.

A presentation is accepted when the liveness result passed AND the faces it sampled match
the enrolled templates by :func:`devicebio.decision.decide` at the model's default operating
point: the decision :class:`~devicebio.authenticator.Authenticator` makes on a liveness session
(identity continuity between the samples is the liveness check's own job, by the same
threshold). For photo attacks the enrolled template is the photo's own
embedding, i.e. the strongest attacker, one who holds a photo of the enrolled user.

Metrics: APCER per species = accepted attacks / attack presentations of that species;
BPCER = refused genuine sessions / genuine sessions.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.liveness import ActiveLiveness, FrameMeasure
from devicebio.sources import Frame, StaticFrames

ENV_VIDEO = "DEVICEBIO_VIDEO"
SEGMENTS_FILE = Path(__file__).with_name("video_segments.json")
LABELS = ("neutral", "turn_left", "turn_right", "look_up", "blink")
PROMPT_LABELS = ("turn_left", "turn_right", "look_up", "blink")
SPECIES = (
    "still_photo",
    "moving_photo",
    "rotated_photo",
    "replay",
    "identity_mismatch",
    "face_swap",
)
MAX_WIDTH = 640  # large videos are downscaled at decode time, as a 640-px camera would see them
REACTION_S = (0.3, 0.8)
PHOTO_FPS = 30.0
CANVAS = (480, 640)  # height, width of the simulated camera for photo attacks


def default_video_dir() -> Path:
    from devicebio.evaluation import shared_data

    return shared_data("video", ENV_VIDEO)


# ---- annotation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    video: str
    person: str
    label: str
    ranges: tuple[tuple[int, int], ...]  # [start, end) frame ranges (0-based, decode order)
    note: str = ""

    @property
    def frames(self) -> list[int]:
        return [i for a, b in self.ranges for i in range(a, b)]


@dataclass(frozen=True)
class Annotation:
    videos: dict[str, dict[str, Any]]  # file name -> {"frames": n, "fps": f, "person": p}
    segments: tuple[Segment, ...]


def load_annotation(path: Path = SEGMENTS_FILE) -> Annotation:
    try:
        raw = json.loads(Path(path).read_text())
        videos = {str(k): dict(v) for k, v in raw["videos"].items()}
        segments = tuple(
            Segment(
                video=str(s["video"]),
                person=str(videos[s["video"]]["person"]),
                label=str(s["label"]),
                ranges=tuple((int(a), int(b)) for a, b in s["ranges"]),
                note=str(s.get("note", "")),
            )
            for s in raw["segments"]
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeviceBioError(
            Reason.MALFORMED_DATA, f"cannot read the segment file {path}: {exc!r}"
        ) from None
    for seg in segments:
        if seg.label not in LABELS or not seg.ranges or any(not 0 <= a < b for a, b in seg.ranges):
            raise DeviceBioError(Reason.MALFORMED_DATA, f"bad segment {seg}")
    return Annotation(videos, segments)


def check_annotation(ann: Annotation, video_dir: Path) -> list[str]:
    """Problems with the annotation against the video folder (empty when all is well)."""
    problems = []
    for name in ann.videos:
        if not (video_dir / name).is_file():
            problems.append(f"{name}: not in {video_dir}")
    for seg in ann.segments:
        n = int(ann.videos[seg.video].get("frames", 0))
        if max(b for _, b in seg.ranges) > n:
            problems.append(f"{seg.video} {seg.label} {seg.ranges}: beyond {n} frames")
    return problems


# ---- decoded footage ----------------------------------------------------------------------


class FrameCache:
    """Each needed video decoded ONCE (downscaled to <= 640 px wide); only annotated frames kept."""

    def __init__(self, video_dir: Path, ann: Annotation) -> None:
        import cv2

        self.fps: dict[str, float] = {}
        self._frames: dict[tuple[str, int], np.ndarray] = {}
        wanted: dict[str, set[int]] = {}
        for seg in ann.segments:
            wanted.setdefault(seg.video, set()).update(seg.frames)
        for name, idx in sorted(wanted.items()):
            cap = cv2.VideoCapture(str(video_dir / name))
            if not cap.isOpened():
                raise DeviceBioError(Reason.FRAME_SOURCE, f"cannot open video {name}")
            self.fps[name] = float(ann.videos[name].get("fps") or cap.get(cv2.CAP_PROP_FPS))
            i, last = 0, max(idx)
            while i <= last:
                ok, bgr = cap.read()
                if not ok:
                    break
                if i in idx:
                    h, w = bgr.shape[:2]
                    if w > MAX_WIDTH:
                        size = (MAX_WIDTH, round(h * MAX_WIDTH / w))
                        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                    self._frames[(name, i)] = np.ascontiguousarray(bgr[:, :, ::-1])
                i += 1
            cap.release()
            missing = [j for j in idx if (name, j) not in self._frames]
            if missing:
                raise DeviceBioError(
                    Reason.FRAME_SOURCE, f"{name}: frames {min(missing)}.. do not decode"
                )

        self._mirrored: dict[tuple[str, int], np.ndarray] = {}
        self._ids = {id(a) for a in self._frames.values()}

    def get(self, video: str, index: int, flip: bool = False) -> np.ndarray:
        """The frame; the same array object every time it is asked for (see ``owns``)."""
        rgb = self._frames[(video, index)]
        if not flip:
            return rgb
        if (video, index) not in self._mirrored:
            mirrored = np.ascontiguousarray(rgb[:, ::-1])
            self._mirrored[(video, index)] = mirrored
            self._ids.add(id(mirrored))
        return self._mirrored[(video, index)]

    def owns(self, rgb: np.ndarray) -> bool:
        """True for an array this cache handed out. They live as long as the cache, so no
        other array can share their id meanwhile."""
        return id(rgb) in self._ids


class RememberingLiveness(ActiveLiveness):
    """ActiveLiveness whose per-frame models run once per recorded video frame.

    Genuine, replay, identity-mismatch and face-swap sessions are spliced from the same few
    hundred annotated frames, so most of an evaluation would recompute the same meshes and
    embeddings. The models are deterministic functions of the pixels, so remembering their
    outputs per frame (only for the cache's own frames, never for rendered photo attacks)
    changes no decision, only the time the evaluation takes. Everything else (optical flow,
    the session logic) still runs on every frame.
    """

    def __init__(self, pipeline: Any, cache: FrameCache) -> None:
        super().__init__(pipeline)
        self._cache = cache
        self._measured: dict[tuple[int, bool], FrameMeasure | None] = {}
        self._embedded: dict[int, np.ndarray | None] = {}

    def measure(self, rgb: np.ndarray, *, eyes: bool = True) -> FrameMeasure | None:
        if not self._cache.owns(rgb):
            return super().measure(rgb, eyes=eyes)
        key = (id(rgb), eyes)
        if key not in self._measured:
            self._measured[key] = super().measure(rgb, eyes=eyes)
        return self._measured[key]

    def _embed(self, rgb: np.ndarray) -> np.ndarray | None:
        if not self._cache.owns(rgb):
            return super()._embed(rgb)
        if id(rgb) not in self._embedded:
            self._embedded[id(rgb)] = super()._embed(rgb)
        return self._embedded[id(rgb)]


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


# ---- simulated presentations ------------------------------------------------------------


Ref = tuple[str, int, bool]


class _Performer:
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


def _canvas(rng: np.random.Generator) -> np.ndarray:
    """A plausible room behind the print: smooth shading plus texture."""
    import cv2

    h, w = CANVAS
    low = rng.uniform(60, 200, size=(6, 8, 1)) + rng.uniform(-15, 15, size=(6, 8, 3))
    low = low.astype(np.float32)
    bg = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    bg += rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


class _PhotoAttack:
    """A printed photo in front of the camera: held still, trembling, or tilted on cue."""

    def __init__(
        self,
        photo: np.ndarray,
        rng: np.random.Generator,
        horizon_s: float,
        mode: str,
    ) -> None:
        self.photo = photo
        self.rng = rng
        self.mode = mode
        self.horizon_s = horizon_s
        self.bg = _canvas(rng)
        self.t = 0.0
        self.pending: list[tuple[float, str]] = []
        self.scale = float(rng.uniform(1.4, 2.0))  # 190-px LFW crop -> 266..380 px on screen
        # tremor: a few incommensurate sinusoids per axis (physiological tremor 4-12 Hz
        # plus slow drift), amplitudes of a hand holding a print at arm's length
        self.tremor = [
            (rng.uniform(0.2, 10.0, size=3), rng.uniform(0, 2 * math.pi, size=3)) for _ in range(4)
        ]
        self.peak_deg = (35.0, 65.0)  # how far the attacker tilts the print
        self.motion: list[tuple[float, float, str, float]] = []  # start, duration, label, peak

    def on_prompt(self, step: Any) -> None:
        start = self.t + float(self.rng.uniform(*REACTION_S))
        label = str(getattr(step.prompt, "value", step.prompt))
        peak = float(self.rng.uniform(*self.peak_deg))
        self.motion.append((start, float(self.rng.uniform(0.8, 1.4)), label, peak))

    def _tremor(self, t: float) -> tuple[float, float, float, float]:
        if self.mode == "still_photo":
            return 0.0, 0.0, 0.0, 1.0
        vals = []
        amps = (4.0, 4.0, 1.5, 0.02)  # px, px, degrees, relative scale
        for (freqs, phases), amp in zip(self.tremor, amps, strict=True):
            w = np.array([1.0, 0.4, 0.2])
            vals.append(amp * float(np.sum(w * np.sin(2 * math.pi * freqs * t + phases))) / 1.6)
        return vals[0], vals[1], vals[2], 1.0 + vals[3]

    def _tilt(self, t: float) -> tuple[float, float]:
        """(yaw-like, pitch-like) rotation of the print in degrees at time t.

        The signs are the ones that move the mesh's yaw/pitch the prompted way (found by
        trying both on LFW prints): the attacker is assumed to know which way works."""
        if self.mode != "rotated_photo":
            return 0.0, 0.0
        for start, dur, label, peak in self.motion:
            if start <= t <= start + dur:
                phase = math.sin(math.pi * (t - start) / dur)  # out and back
                if label == "turn_left":
                    return -peak * phase, 0.0
                if label == "turn_right":
                    return peak * phase, 0.0
                if label == "look_up":
                    return 0.0, -peak * phase
                # blink: a print cannot blink; the best try is a quick wobble
                return 0.0, 15.0 * math.sin(2 * math.pi * (t - start) / dur)
        return 0.0, 0.0

    def render(self, t: float) -> np.ndarray:
        import cv2

        h, w = CANVAS
        ph, pw = self.photo.shape[:2]
        dx, dy, rot, sc = self._tremor(t)
        yaw, pitch = self._tilt(t)
        half_w, half_h = pw * self.scale / 2, ph * self.scale / 2
        corners = np.array(
            [[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]]
        )
        # the print as a plane rotated about its centre, seen by a pinhole camera
        f, dist = 700.0, 700.0
        cy_, sy_ = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
        pts3 = np.stack([corners[:, 0], corners[:, 1], np.zeros(4)], axis=1)
        ry = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        pts3 = pts3 @ (rx @ ry).T
        proj = f * pts3[:, :2] / (dist + pts3[:, 2:3])
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        proj = proj @ np.array([[c, s], [-s, c]]) * sc
        proj += np.array([w / 2 + dx, h / 2 + dy])
        src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=np.float32)
        m = cv2.getPerspectiveTransform(src, proj.astype(np.float32))
        out = cv2.warpPerspective(
            self.photo,
            m,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
            dst=self.bg.copy(),
        )
        noise = self.rng.normal(0, 2.0, size=out.shape)
        return np.clip(out + noise, 0, 255).astype(np.uint8)

    def __iter__(self) -> Iterator[Frame]:
        n = 0
        while self.t <= self.horizon_s:
            yield Frame(self.render(self.t), self.t)
            n += 1
            self.t = n / PHOTO_FPS


# ---- evaluation ---------------------------------------------------------------------------


def _horizon(plan: Sequence[Any]) -> float:
    return 3.0 + sum(float(s.delay_s) + float(s.window_s) for s in plan)


def _machine() -> dict[str, Any]:
    from devicebio.evaluation.lfw import _machine as machine

    return machine()


def _identity_ok(embeddings: np.ndarray, templates: np.ndarray, policy: Any) -> bool:
    """The session's sampled faces match the enrolled templates by the product's decision
    (devicebio.decision.decide), exactly as Authenticator fuses a liveness session's samples."""
    from devicebio import decision

    return decision.decide(embeddings, templates, policy) is decision.Verdict.ACCEPT


@dataclass
class _Tally:
    presented: int = 0
    accepted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    accepted_durations: list[float] = field(default_factory=list)

    def add(self, accepted: bool, reason: str, duration: float) -> None:
        self.presented += 1
        self.accepted += int(accepted)
        self.reasons[reason] += 1
        self.durations.append(duration)
        if accepted:
            self.accepted_durations.append(duration)


@dataclass(frozen=True)
class _Outcome:
    kind: str
    person: str  # the enrolled (claimed) person; "lfw" for photo attacks
    accepted: bool
    reason: str
    duration_s: float
    redraws: int = 0


class _Bench:
    """Everything one process needs to present sessions: models, decoded footage, templates."""

    def __init__(
        self,
        video_dir: Path,
        lfw_dir: Path,
        annotation: Path,
        seed: int | None,
        pipeline: Any = None,
        liveness: Any = None,
    ) -> None:
        from devicebio import decision
        from devicebio.vision.pipeline import FaceCapture, FacePipeline

        self.policy = decision.Policy.of()
        self.seed = seed
        self.lfw_dir = lfw_dir
        ann = load_annotation(annotation)
        self.pipe = pipeline or FacePipeline()
        t0 = time.perf_counter()
        self.cache = FrameCache(video_dir, ann)
        self.decode_s = time.perf_counter() - t0
        self.live = liveness or RememberingLiveness(self.pipe, self.cache)
        self.people = build_people(ann)
        self.complete = sorted(n for n, p in self.people.items() if p.complete)
        # every plan has a head turn: anyone with neutral footage and both turns takes part
        cast = sorted(
            n for n, p in self.people.items() if p.can_answer(["turn_left", "turn_right"])
        )
        # enrolment: the person's own neutral frames, as the pipeline sees them
        self.templates: dict[str, np.ndarray] = {}
        for name in cast:
            refs = [r for c in self.people[name].neutral for r in c.refs()]
            picks = [refs[int(i)] for i in np.linspace(0, len(refs) - 1, min(5, len(refs)))]
            embs = []
            for ref in picks:
                res = self.pipe.analyze(self.cache.get(*ref), select="largest", gates=False)
                if isinstance(res, FaceCapture):
                    embs.append(res.embedding)
            if embs:
                self.templates[name] = np.stack(embs)
        self.cast = [n for n in cast if n in self.templates]
        self.lfw_people = sorted(os.listdir(lfw_dir / "images"))
        self._capture = FaceCapture

    # ---- helpers ---------------------------------------------------------------------------

    def _challenge(self, rng: np.random.Generator) -> bytes:
        # reproducible with a seed; otherwise what an RP does
        return rng.bytes(32) if self.seed is not None else secrets.token_bytes(32)

    def _fitting(
        self, rng: np.random.Generator, fits: Callable[[list[str]], bool]
    ) -> tuple[bytes, tuple[Any, ...], int]:
        """A fresh challenge whose plan the simulated footage can answer, and how many
        challenges were redrawn for it. People whose footage lacks a prompt type (no blink, no
        look-up) only take part in sessions whose plan does not ask for it; the challenge is
        otherwise as random as an RP's."""
        from devicebio.protocol import liveness_plan

        for n in range(5000):
            c = self._challenge(rng)
            plan = liveness_plan(c)
            if fits(_labels(plan)):
                return c, plan, n
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "no plan fits the annotated footage")

    def _answers(self, name: str) -> Callable[[list[str]], bool]:
        return self.people[name].can_answer

    def _pick(self, rng: np.random.Generator, exclude: str | None = None) -> str:
        pool = [n for n in self.cast if n != exclude]
        return pool[int(rng.integers(len(pool)))]

    def _photo(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        for _ in range(100):
            who = self.lfw_people[int(rng.integers(len(self.lfw_people)))]
            folder = self.lfw_dir / "images" / who
            files = sorted(os.listdir(folder))
            bgr = cv2.imread(str(folder / files[int(rng.integers(len(files)))]))
            if bgr is None:
                continue
            # the attacker prints the face, not the bystanders at the edge of a press photo
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[30:220, 30:220])
            res = self.pipe.analyze(rgb, select="center", gates=False)
            if isinstance(res, self._capture):
                return rgb, res.embedding[None]
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "no usable face photo found in LFW")

    def _present(
        self,
        kind: str,
        person: str,
        frames: Any,
        on_prompt: Callable[[Any], None] | None,
        enrolled: np.ndarray,
        c: bytes,
        redraws: int = 0,
    ) -> _Outcome:
        result = self.live.run(frames, c, on_prompt=on_prompt)
        if not result.passed:
            accepted, reason = False, str(result.reason or "refused")
        elif not _identity_ok(result.embeddings, enrolled, self.policy):
            accepted, reason = False, "identity_mismatch"
        else:
            accepted, reason = True, "accepted"
        return _Outcome(kind, person, accepted, reason, float(result.duration_s), redraws)

    # ---- one task ------------------------------------------------------------------------

    def task(self, kind: str, index: int, replay: bool) -> list[_Outcome]:
        """One presentation (a genuine one with ``replay`` also replays its recording)."""
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        if kind in ("genuine", "replay"):
            name = self._pick(rng)
            c, plan, redrawn = self._fitting(rng, self._answers(name))
            user = _Performer(self.cache, self.people[name], rng, _horizon(plan))
            out = []
            if kind == "genuine":
                out.append(
                    self._present(
                        kind, name, user, user.on_prompt, self.templates[name], c, redrawn
                    )
                )
            else:  # a replay with no genuine run to record from: record one now
                self.live.run(user, c, on_prompt=user.on_prompt)
            if replay or kind == "replay":
                # the recording, exactly as the camera delivered it, against a fresh challenge
                images = [self.cache.get(*r) for r in user.record]
                frames = StaticFrames(images, timestamps=user.stamps).frames()
                fresh = self._challenge(rng)
                out.append(self._present("replay", name, frames, None, self.templates[name], fresh))
            return out
        if kind in ("still_photo", "moving_photo", "rotated_photo"):
            from devicebio.protocol import liveness_plan

            c = self._challenge(rng)
            rgb, enrolled = self._photo(rng)
            attack = _PhotoAttack(rgb, rng, _horizon(liveness_plan(c)), kind)
            return [self._present(kind, "lfw", attack, attack.on_prompt, enrolled, c)]
        if len(self.cast) < 2:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"{kind} needs two people on video")
        victim = self._pick(rng)
        other = self._pick(rng, exclude=victim)
        if kind == "identity_mismatch":
            c, plan, redrawn = self._fitting(rng, self._answers(other))
            user = _Performer(self.cache, self.people[other], rng, _horizon(plan))
        else:  # face_swap: the victim answers the first prompts, the other person the rest
            k = int(rng.integers(1, 4))
            v, o = self.people[victim], self.people[other]
            c, plan, redrawn = self._fitting(
                rng, lambda lab: v.can_answer(lab[:k]) and o.can_answer(lab[k:])
            )
            user = _Performer(self.cache, v, rng, _horizon(plan), other=o, swap_at=k)
        return [
            self._present(kind, victim, user, user.on_prompt, self.templates[victim], c, redrawn)
        ]


def _labels(plan: Sequence[Any]) -> list[str]:
    return [str(getattr(st.prompt, "value", st.prompt)) for st in plan]


_WORKER: dict[str, _Bench] = {}


def _worker_init(args: tuple[Path, Path, Path, int | None], threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from devicebio.vision.pipeline import FacePipeline

    _WORKER["bench"] = _Bench(*args, pipeline=FacePipeline(threads=threads))


def _worker_task(job: tuple[str, int, bool]) -> list[_Outcome]:
    return _WORKER["bench"].task(*job)


def evaluate(
    video_dir: Path,
    lfw_dir: Path,
    *,
    sessions: int = 200,
    attacks: int = 200,
    seed: int | None = None,
    species: Sequence[str] = SPECIES,
    annotation: Path = SEGMENTS_FILE,
    workers: int = 1,
    progress: bool = True,
    pipeline: Any = None,
    liveness: Any = None,
) -> dict[str, Any]:
    """Run the evaluation; returns the report (see the module doc).

    ``workers`` > 1 runs presentations in that many processes (each decodes the footage once
    and loads its own models); results do not depend on it when ``seed`` is given."""
    started = time.perf_counter()
    unknown = set(species) - set(SPECIES)
    if unknown:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"unknown species {sorted(unknown)}")
    if sessions < 0 or attacks < 0 or workers < 1:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "sizes must be >= 0, workers >= 1")
    ann = load_annotation(annotation)
    problems = check_annotation(ann, video_dir)
    if problems:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "; ".join(problems[:5]))

    # The replay species replays genuine session i's recording: the pair runs as one job.
    replays = attacks if "replay" in species else 0
    jobs: list[tuple[str, int, bool]] = [("genuine", i, i < replays) for i in range(sessions)]
    jobs += [("replay", 100_000 + i, True) for i in range(sessions, replays)]
    for n, kind in enumerate(s for s in species if s != "replay"):
        jobs += [(kind, (n + 1) * 1_000_000 + i, False) for i in range(attacks)]
    total = sessions + replays + attacks * len([s for s in species if s != "replay"])

    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="presentations", unit="pres")
    outcomes: list[_Outcome] = []
    args = (video_dir, lfw_dir, annotation, seed)
    if workers == 1:
        bench = _Bench(*args, pipeline=pipeline, liveness=liveness)
        decode_s, people, complete, cast = bench.decode_s, bench.people, bench.complete, bench.cast
        for job in jobs:
            got = bench.task(*job)
            outcomes += got
            if bar is not None:
                bar.update(len(got))
    else:
        import multiprocessing as mp

        probe = build_people(ann)
        people = probe
        complete = sorted(n for n, p in probe.items() if p.complete)
        cast = sorted(n for n, p in probe.items() if p.can_answer(["turn_left", "turn_right"]))
        decode_s = None  # each worker decodes its own copy
        threads = max(1, (os.cpu_count() or 1) // workers)
        with mp.get_context("fork").Pool(workers, _worker_init, (args, threads)) as pool:
            for got in pool.imap_unordered(_worker_task, jobs, chunksize=1):
                outcomes += got
                if bar is not None:
                    bar.update(len(got))
    if bar is not None:
        bar.close()

    from devicebio import decision

    tallies: dict[str, _Tally] = {"genuine": _Tally(), **{s: _Tally() for s in species}}
    per_person: dict[str, _Tally] = {}
    redraws: Counter[str] = Counter()
    for o in outcomes:
        tallies[o.kind].add(o.accepted, o.reason, o.duration_s)
        redraws[o.kind] += o.redraws
        if o.kind == "genuine":
            per_person.setdefault(o.person, _Tally()).add(o.accepted, o.reason, o.duration_s)

    genuine = tallies["genuine"]

    def rate(t: _Tally) -> float | None:
        return t.accepted / t.presented if t.presented else None

    report: dict[str, Any] = {
        "standard": "ISO/IEC 30107-3: APCER per PAI species, BPCER",
        "bpcer": (
            (genuine.presented - genuine.accepted) / genuine.presented
            if genuine.presented
            else None
        ),
        "apcer": {s: rate(tallies[s]) for s in species},
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
        "identity_threshold": decision.Policy.of().threshold,
        "seed": seed,
        "workers": workers,
        "decode_seconds": decode_s,
        "seconds_total": time.perf_counter() - started,
        "machine": _machine() | {"load_average": list(os.getloadavg())},
    }
    return report


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
    lines.append(f"run time: {report['seconds_total']:.0f} s")
    return "\n".join(lines)
