"""The runner: one process's bench (models, decoded footage, enrolled templates) presenting
sessions, the job list, the optional process pool, and :func:`evaluate`."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.evaluation.liveness.annotation import (
    SEGMENTS_FILE,
    check_annotation,
    load_annotation,
)
from devicebio.evaluation.liveness.attacks import (
    PHOTO_SPECIES,
    SCREEN_SPECIES,
    SPECIES,
    PhotoAttack,
)
from devicebio.evaluation.liveness.footage import FrameCache, RememberingLiveness
from devicebio.evaluation.liveness.performers import (
    Performer,
    build_people,
    horizon,
    prompt_labels,
)
from devicebio.evaluation.liveness.report import Outcome, summarise
from devicebio.sources import Frame, StaticFrames


def identity_ok(embeddings: np.ndarray, templates: np.ndarray, policy: Any) -> bool:
    """The session's sampled faces match the enrolled templates by the product's decision
    (devicebio.decision.decide), exactly as Authenticator fuses a liveness session's samples."""
    from devicebio import decision

    return decision.decide(embeddings, templates, policy) is decision.Verdict.ACCEPT


class Bench:
    """Everything one process needs to present sessions: models, decoded footage, templates."""

    def __init__(
        self,
        video_dir: Path,
        lfw_dir: Path,
        annotation: Path,
        seed: int | None,
        pad: bool | None = None,
        replay_challenges: int = 1,
        pipeline: Any = None,
        liveness: Any = None,
    ) -> None:
        from devicebio import decision
        from devicebio.vision.pipeline import FaceCapture, FacePipeline

        self.policy = decision.Policy.of()
        self.seed = seed
        self.replay_challenges = replay_challenges  # fresh challenges per recorded session
        self.lfw_dir = lfw_dir
        ann = load_annotation(annotation)
        self.pipe = pipeline or FacePipeline()
        t0 = time.perf_counter()
        self.cache = FrameCache(video_dir, ann)
        self.decode_s = time.perf_counter() - t0
        self.live = liveness or RememberingLiveness(self.pipe, self.cache, detectors_for(pad))
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
            if fits(prompt_labels(plan)):
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
        recorded: Any = None,
    ) -> Outcome:
        """One session through the product's decision. ``recorded``: for a replay, the plan
        the recording answered (the outcome then says how much of it the fresh plan shares)."""
        result = self.live.run(frames, c, on_prompt=on_prompt)
        if not result.passed:
            accepted, reason = False, str(result.reason or "refused")
        elif not identity_ok(result.embeddings, enrolled, self.policy):
            accepted, reason = False, "identity_mismatch"
        else:
            accepted, reason = True, "accepted"
        duration = float(result.duration_s)
        common, same = None, False
        if recorded is not None:
            was, now = prompt_labels(recorded), prompt_labels(result.plan)
            common = next(
                (i for i, (a, b) in enumerate(zip(was, now, strict=True)) if a != b), len(now)
            )
            same = was == now
        return Outcome(
            kind,
            person,
            accepted,
            reason,
            duration,
            redraws,
            bool(result.passed),
            int(result.steps_done),
            common,
            same,
        )

    # ---- one task ------------------------------------------------------------------------

    def task(self, kind: str, index: int, replay: bool) -> list[Outcome]:
        """One presentation (a genuine one with ``replay`` also replays its recording)."""
        rng = np.random.default_rng(None if self.seed is None else [self.seed, index])
        if kind in ("genuine", "replay"):
            name = self._pick(rng)
            c, plan, redrawn = self._fitting(rng, self._answers(name))
            user = Performer(self.cache, self.people[name], rng, horizon(plan))
            out = []
            if kind == "genuine":
                out.append(
                    self._present(
                        kind, name, user, user.on_prompt, self.templates[name], c, redrawn
                    )
                )
            else:  # a replay with no genuine run to record from: record one now
                self._record(user, c)
            if replay or kind == "replay":
                # the recording, exactly as the camera delivered it, against fresh challenges
                images = [self.cache.get(*r) for r in user.record]
                for _ in range(self.replay_challenges):
                    frames = StaticFrames(images, timestamps=user.stamps).frames()
                    fresh = self._challenge(rng)
                    out.append(
                        self._present(
                            "replay",
                            name,
                            frames,
                            None,
                            self.templates[name],
                            fresh,
                            recorded=plan,
                        )
                    )
            return out
        if kind in SCREEN_SPECIES:
            return [self._screen(kind, rng)]
        if kind in PHOTO_SPECIES:
            from devicebio.protocol import liveness_plan

            c = self._challenge(rng)
            rgb, enrolled = self._photo(rng)
            attack = PhotoAttack(rgb, rng, horizon(liveness_plan(c)), kind)
            return [self._present(kind, "lfw", attack, attack.on_prompt, enrolled, c)]
        if len(self.cast) < 2:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"{kind} needs two people on video")
        victim = self._pick(rng)
        other = self._pick(rng, exclude=victim)
        if kind == "identity_mismatch":
            c, plan, redrawn = self._fitting(rng, self._answers(other))
            user = Performer(self.cache, self.people[other], rng, horizon(plan))
        else:  # face_swap: the victim answers the first prompts, the other person the rest
            k = int(rng.integers(1, 4))
            v, o = self.people[victim], self.people[other]
            c, plan, redrawn = self._fitting(
                rng, lambda lab: v.can_answer(lab[:k]) and o.can_answer(lab[k:])
            )
            user = Performer(self.cache, v, rng, horizon(plan), other=o, swap_at=k)
        return [
            self._present(kind, victim, user, user.on_prompt, self.templates[victim], c, redrawn)
        ]

    def _record(self, user: Performer, challenge: bytes) -> None:
        """Run a session only to record the performer's camera frames for a replay: the
        active checks drive the prompts; the PAD's verdict would be thrown away unread."""
        saved = self.live.detectors
        self.live.detectors = ()
        try:
            self.live.run(user, challenge, on_prompt=user.on_prompt)
        finally:
            self.live.detectors = saved

    def _screen(self, kind: str, rng: np.random.Generator) -> Outcome:
        """A screen recapture of the enrolled person's own footage (see the package doc)."""
        from devicebio.evaluation.liveness.screen import ScreenRecapture

        name = self._pick(rng)
        c, plan, redrawn = self._fitting(rng, self._answers(name))
        user = Performer(self.cache, self.people[name], rng, horizon(plan))
        screen = ScreenRecapture(rng)
        enrolled = self.templates[name]
        if kind == "steered_screen_replay":
            # the attacker answers each prompt as it is shown, with the victim's own clip
            steered = (Frame(screen.render(f.rgb, f.timestamp), f.timestamp) for f in user)
            return self._present(kind, name, steered, user.on_prompt, enrolled, c, redrawn)
        # plain: a recording made for another challenge, played through the screen
        self._record(user, c)
        fresh = self._challenge(rng)
        shown = (
            Frame(screen.render(self.cache.get(*ref), t), t)
            for ref, t in zip(user.record, user.stamps, strict=True)
        )
        return self._present(kind, name, shown, None, enrolled, fresh)


def detectors_for(pad: bool | None) -> Any:
    """None: the product's default PAD (ActiveLiveness decides); False: active checks only;
    True: the passive PAD, which must then be installed."""
    if pad is None:
        return None
    if not pad:
        return ()
    from devicebio.liveness import PassivePadDetector

    return (PassivePadDetector(),)


_WORKER: dict[str, Bench] = {}


def _worker_init(args: tuple[Path, Path, Path, int | None, bool | None, int], threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from devicebio.vision.pipeline import FacePipeline

    _WORKER["bench"] = Bench(*args, pipeline=FacePipeline(threads=threads))


def _worker_task(job: tuple[str, int, bool]) -> list[Outcome]:
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
    pad: bool | None = None,
    recaptures: Path | None = None,
    replay_challenges: int = 1,
) -> dict[str, Any]:
    """Run the evaluation; returns the report (see the module doc).

    ``workers`` > 1 runs presentations in that many processes (each decodes the footage once
    and loads its own models); results do not depend on it when ``seed`` is given.
    ``pad``: see :func:`detectors_for`. ``recaptures``: a folder of real recaptures to show
    the same detectors (:mod:`.recaptures`). ``replay_challenges``: each recorded session is
    replayed against that many fresh challenges (the replay species' cost is the recording)."""
    started = time.perf_counter()
    unknown = set(species) - set(SPECIES)
    if unknown:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"unknown species {sorted(unknown)}")
    if sessions < 0 or attacks < 0 or workers < 1 or replay_challenges < 1:
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
    total = (
        sessions
        + replays * replay_challenges
        + attacks * len([s for s in species if s != "replay"])
    )

    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="presentations", unit="pres")
    outcomes: list[Outcome] = []
    args = (video_dir, lfw_dir, annotation, seed, pad, replay_challenges)
    if workers == 1:
        bench = Bench(*args, pipeline=pipeline, liveness=liveness)
        decode_s, people, complete, cast = bench.decode_s, bench.people, bench.complete, bench.cast
        detectors = bench.live.detectors
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
        from devicebio.liveness import default_detectors

        chosen = detectors_for(pad)
        detectors = default_detectors() if chosen is None else chosen
        threads = max(1, (os.cpu_count() or 1) // workers)
        with mp.get_context("fork").Pool(workers, _worker_init, (args, threads)) as pool:
            for got in pool.imap_unordered(_worker_task, jobs, chunksize=1):
                outcomes += got
                if bar is not None:
                    bar.update(len(got))
    if bar is not None:
        bar.close()

    real = None
    if recaptures is not None and detectors:
        from devicebio.evaluation.liveness.recaptures import real_recaptures
        from devicebio.vision.pipeline import FacePipeline

        real = real_recaptures(recaptures, pipeline or FacePipeline(), detectors)
    return summarise(
        outcomes,
        species=species,
        people=people,
        complete=complete,
        cast=cast,
        seed=seed,
        workers=workers,
        decode_s=decode_s,
        started=started,
        pad=[str(getattr(d, "name", type(d).__name__)) for d in detectors],
        real_recaptures=real,
        replay_challenges=replay_challenges,
    )
