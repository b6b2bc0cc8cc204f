"""Active, challenge-bound liveness: prompts derived from the RP's challenge, answered on camera.

The relying party's challenge fixes a short prompt sequence
(:func:`devicebio.protocol.liveness_plan`:
turn left/right, look up, blink, with random delays). :class:`ActiveLiveness` tracks the face
per frame (BlazeFace, the 468-point mesh refined by the iris model, head pose and eye
openness) and accepts only if every response comes in order, after its prompt and inside its
window, from the same face throughout. On top of the sequence it checks what a photo or a
screen gives away: a flat surface turned in front of the camera moves its landmarks like a
plane (a homography fits them), a static image does not move at all, and a feed with
implausible timestamps is refused.

Signs follow :func:`devicebio.vision.mesh.head_pose`: turn_left is positive yaw (the
SUBJECT's left, unmirrored frames), look_up positive pitch, both relative to the subject's
own neutral pose measured in the first ``baseline_s`` seconds.

Frames, meshes and embeddings stay in memory; nothing here logs a score or an image.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicebio import decision
from devicebio.errors import DeviceBioError, Reason, protocol_errors
from devicebio.liveness.parallax import PlaneTracker, nonrigid_motion
from devicebio.liveness.parallax import grey as _grey
from devicebio.liveness.results import (
    LivenessFailure,
    LivenessResult,
    PadVerdict,
    PresentationAttackDetector,
)
from devicebio.protocol import Prompt, PromptStep, liveness_plan, liveness_sequence_hash
from devicebio.sources import Frame

__all__ = ["ActiveLiveness", "FrameMeasure", "LivenessConfig"]

# Mesh indices: forehead top / chin and the two cheek edges for the face's own aspect ratio.
_FOREHEAD, _CHIN, _CHEEK_R, _CHEEK_L = 10, 152, 234, 454


@dataclass(frozen=True)
class LivenessConfig:
    """Thresholds. Angles are degrees relative to the subject's own neutral pose.

    - ``baseline_s``: the first seconds, looking at the camera, that define "neutral".
    - ``yaw_deg`` / ``pitch_deg``: a turn / look-up counts once beyond this; higher is stricter.
    - ``return_yaw_deg`` / ``return_pitch_deg``: back to neutral (re-armed for the next
      prompt) once within these.
    - ``min_reaction_s``: a response that crosses its threshold sooner than this after its
      prompt was shown is "early": no person sees a prompt and turns 18 degrees that fast,
      but a recording made for another plan often lands there. Higher is stricter.
    - ``blink_close_ratio``: both eyes' openness below this fraction of their neutral level is
      a closed eye; ``blink_open_ratio``: above this, reopened. Lower close ratio is stricter.
    - ``blink_shape_ratio``: while the eyes read closed, the face's height/width must stay
      above this fraction of its neutral value; a photo tilted back squashes the eyes AND
      the whole face (measured: tilting a print 60 degrees faked a blink in 38% of LFW
      photos without this check). Higher is stricter.
    - ``parallax_min``: during a turn, image points at the mesh (followed by optical flow,
      forward-backward checked, from the most frontal neutral frame before it) are fitted
      with a homography; the RMS residual in inter-ocular units, divided by the sine of the
      yaw turned since that frame, must reach this. A flat photo stays below it. Higher is
      stricter. Calibrated (seed 21 sessions and separate tilt sequences, never the seed of
      the reported evaluation): genuine turns of the four people on the shared footage reach
      0.13-0.46 (the lowest: zub's 15 fps turns entered from another part of the clip, and
      krz's 25-degree turn at 16 fps, 0.17); LFW prints tilted in 3-D up to 55-75 degrees
      with hand tremor (80 sequences, 13 of which the mesh read as turned) reach 0.08-0.125,
      with two outliers (0.17, and 0.8 where the tilted print left part of the mesh on the
      background). A turn below it fails the session as ``flat_surface``.
    - ``motion_min``: largest non-rigid landmark motion (inter-ocular units) over the session
      below which nothing ever moved (a static image).
    - ``identity_threshold``: every pair of sampled embeddings must be closer than this
      (None: the ``same_person`` threshold of the face model's default operating point; see
      devicebio.decision.continues).
    - ``max_lost_frames``: consecutive frames without the face before the session fails.
    - ``min_fps_dt`` / ``max_gap_s``: frame intervals outside [1/120 s, 0.5 s] are refused.
    - ``several_faces_ratio``: a second face this fraction of the first one's width is a
      second person.
    """

    baseline_s: float = 0.4
    yaw_deg: float = 18.0
    pitch_deg: float = 15.0
    return_yaw_deg: float = 10.0
    return_pitch_deg: float = 10.0
    min_reaction_s: float = 0.3
    blink_close_ratio: float = 0.6
    blink_open_ratio: float = 0.8
    blink_shape_ratio: float = 0.9
    parallax_min: float = 0.12
    motion_min: float = 0.004
    identity_threshold: float | None = None
    max_lost_frames: int = 4
    min_fps_dt: float = 1.0 / 120.0
    max_gap_s: float = 0.5
    several_faces_ratio: float = 0.5
    end_timeout_s: float = 3.0


@dataclass(frozen=True)
class FrameMeasure:
    """Per-frame measurements (memory only)."""

    detection: Any
    mesh: np.ndarray = field(repr=False)
    presence: float
    yaw: float
    pitch: float
    ear_left: float
    ear_right: float
    faces: int
    aspect: float  # face height / width in the image (forehead-chin over cheek-cheek)


class _Gesture(enum.Enum):
    NEUTRAL = "neutral"
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    OTHER = "other"  # between neutral and a gesture, or one never prompted (looking down)


_GESTURE_OF = {
    Prompt.TURN_LEFT: _Gesture.LEFT,
    Prompt.TURN_RIGHT: _Gesture.RIGHT,
    Prompt.LOOK_UP: _Gesture.UP,
}


class _Failed(Exception):
    def __init__(self, reason: LivenessFailure) -> None:
        super().__init__(reason)
        self.reason = reason


class ActiveLiveness:
    """Runs a challenge's prompt sequence over frames; see the module docstring."""

    def __init__(
        self,
        pipeline: Any,
        *,
        config: LivenessConfig | None = None,
        detectors: Sequence[PresentationAttackDetector] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> None:
        from devicebio.vision import models
        from devicebio.vision._ort import make_session
        from devicebio.vision.mesh import FaceMesh

        self.pipeline = pipeline
        self.config = config or LivenessConfig()
        # None: the product's default PAD (the passive MiniFASNet pair when its models are
        # installed, see devicebio.liveness.passive.default_detectors); () runs active only.
        if detectors is None:
            from devicebio.liveness.passive import default_detectors

            detectors = default_detectors(threads=threads)
        self.detectors = tuple(detectors)
        face = make_session(models.load_model("mp_face_landmark", cache_dir), None, threads)
        iris = make_session(models.load_model("mp_iris_landmark", cache_dir), None, threads)
        self.mesh = FaceMesh(face, iris)
        # The iris model is two thirds of the per-frame cost (measured 15-22 of 23-30 ms) and
        # only blinks need it: pose, parallax and motion use the plain mesh on every frame.
        self._plain = FaceMesh(face)

    @property
    def identity_policy(self) -> decision.Policy:
        """The face decision's policy for identity continuity (devicebio.decision)."""
        return decision.Policy.of(same_person=self.config.identity_threshold)

    # ---- per frame -----------------------------------------------------------------------

    def measure(self, rgb: np.ndarray, *, eyes: bool = True) -> FrameMeasure | None:
        """Detect, mesh, pose (and with ``eyes`` the iris model's eye openness, else NaN) for
        one frame; None when no face."""
        from devicebio.vision.detector_blaze import check_rgb
        from devicebio.vision.mesh import PRESENCE_THRESHOLD, eye_openness, head_pose

        faces, _ = self.pipeline.detect(rgb)
        if not faces:
            return None
        widths = [d.width for d, _ in faces]
        order = np.argsort(widths)[::-1]
        detection = faces[int(order[0])][0]
        several = sum(1 for w in widths if w >= self.config.several_faces_ratio * widths[order[0]])
        mesh, presence = self._plain.landmarks_and_presence(rgb, detection)
        if presence < PRESENCE_THRESHOLD:
            return None
        ear_l = ear_r = math.nan
        try:
            yaw, pitch, _ = head_pose(mesh)
            if eyes:
                refined = mesh.astype(np.float64)
                # same package: FaceMesh's own eyelid refinement, on the mesh already computed
                self.mesh._refine_eyes(check_rgb(rgb), refined)
                ear_l, ear_r = eye_openness(refined)
        except DeviceBioError:
            return None  # a collapsed mesh is no usable face
        xy = mesh[:, :2].astype(np.float64)
        width = float(np.linalg.norm(xy[_CHEEK_L] - xy[_CHEEK_R]))
        aspect = float(np.linalg.norm(xy[_CHIN] - xy[_FOREHEAD])) / max(width, 1e-6)
        return FrameMeasure(detection, mesh, presence, yaw, pitch, ear_l, ear_r, several, aspect)

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """The embedding of the largest face in one frame (the identity sample a session takes),
        None when no face. Public so a caller may time it or remember it per frame."""
        from devicebio.vision.pipeline import FaceCapture

        cap = self.pipeline.analyze(rgb, select="largest", gates=False)
        return cap.embedding if isinstance(cap, FaceCapture) else None

    # ---- session -------------------------------------------------------------------------

    def run(
        self,
        frames: Iterable[Frame],
        challenge: bytes,
        on_prompt: Callable[[PromptStep], None] | None = None,
    ) -> LivenessResult:
        """Consume ``frames`` until the challenge's plan completes, fails or times out.

        Frame timestamps (seconds) are the clock. ``on_prompt`` is called once per step when
        its prompt is due: a live UI shows it then.
        """
        with protocol_errors():
            plan = liveness_plan(challenge)
            digest = liveness_sequence_hash(challenge, plan)
        session = _Session(self, plan, on_prompt)
        reason: LivenessFailure | None = None
        try:
            for frame in frames:
                if session.feed(frame):
                    break
            else:
                session.finish_stream()
            session.final_checks()
        except _Failed as failed:
            reason = failed.reason
        pad = tuple(_assess(d, session.kept_frames, session.kept_faces) for d in self.detectors)
        if reason is None and not all(v.passed for v in pad):
            reason = LivenessFailure.PAD_FAILED
        embeddings = (
            np.stack(session.embeddings).astype(np.float32)
            if session.embeddings
            else np.zeros((0, 128), np.float32)
        )
        return LivenessResult(
            passed=reason is None,
            reason=reason,
            plan=plan,
            sequence_hash=digest,
            frames=session.count,
            duration_s=session.duration,
            embeddings=embeddings,
            pad=pad,
            steps_done=session.step,
        )


def _assess(
    detector: PresentationAttackDetector, frames: Sequence[Frame], faces: Sequence[Any]
) -> PadVerdict:
    """A plug-in's verdict; one that crashes or answers nonsense counts as failed (closed)."""
    name = str(getattr(detector, "name", type(detector).__name__))
    try:
        verdict = detector.assess(frames, faces)
    except Exception as exc:  # a third-party plug-in may raise anything
        return PadVerdict(name, False, "passive", f"detector error: {type(exc).__name__}")
    if not isinstance(verdict, PadVerdict) or type(verdict.passed) is not bool:
        return PadVerdict(name, False, "passive", "detector returned no PadVerdict")
    return verdict


class _Session:
    """The state of one run (kept out of ActiveLiveness so one instance serves many runs)."""

    def __init__(
        self,
        owner: ActiveLiveness,
        plan: tuple[PromptStep, ...],
        on_prompt: Callable[[PromptStep], None] | None,
    ) -> None:
        self.o = owner
        self.cfg = owner.config
        self.plan = plan
        self.on_prompt = on_prompt
        self.count = 0
        self.t0: float | None = None
        self.t_last: float | None = None
        self.lost = 0
        self.base: list[FrameMeasure] = []
        self.base_frames: list[np.ndarray] = []
        self.neutral: FrameMeasure | None = None
        self.yaw0 = self.pitch0 = self.earl0 = self.earr0 = self.aspect0 = 0.0
        self.baseline_end = 0.0
        self.step = 0
        self.shown_at: float | None = None  # when the current step's prompt is/was due
        self.announced = -1
        self.armed = False
        self.eyes_closed_at: float | None = None
        self.turn_parallax: float | None = None  # max parallax (per sine) of the current turn
        self.plane = PlaneTracker()
        self.last_gesture: _Gesture | None = None
        self.motion = 0.0
        self.embeddings: list[np.ndarray] = []
        self.ending_since: float | None = None
        self.kept_frames: list[Frame] = []
        self.kept_faces: list[Any] = []

    @property
    def duration(self) -> float:
        if self.t0 is None or self.t_last is None:
            return 0.0
        return self.t_last - self.t0

    def _sample(self, rgb: np.ndarray) -> None:
        emb = self.o.embed(rgb)
        if emb is None:
            return
        if not decision.continues(emb, np.asarray(self.embeddings), self.o.identity_policy):
            raise _Failed(LivenessFailure.IDENTITY_CHANGED)
        self.embeddings.append(np.asarray(emb, np.float32))

    def _timing(self, t: float) -> None:
        if not math.isfinite(t):
            raise _Failed(LivenessFailure.BAD_TIMING)
        if self.t_last is not None:
            dt = t - self.t_last
            if dt < self.cfg.min_fps_dt or dt > self.cfg.max_gap_s:
                raise _Failed(LivenessFailure.BAD_TIMING)
        if self.t0 is None:
            self.t0 = t
        self.t_last = t

    def feed(self, frame: Frame) -> bool:
        """One frame; True when the session is over (passed, pending final checks)."""
        if not isinstance(frame, Frame):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "frames must yield devicebio Frame")
        t = float(frame.timestamp)
        self._timing(t)
        self.count += 1
        m = self.o.measure(frame.rgb, eyes=self._eyes_needed())
        if self.o.detectors:
            self.kept_frames.append(frame)
            self.kept_faces.append(None if m is None else m.detection)
        if m is None:
            self.lost += 1
            if self.lost > self.cfg.max_lost_frames:
                raise _Failed(
                    LivenessFailure.FACE_LOST
                    if self.neutral is not None
                    else LivenessFailure.NO_FACE
                )
            return False
        self.lost = 0
        if m.faces > 1:
            raise _Failed(LivenessFailure.SEVERAL_FACES)
        assert self.t0 is not None
        if self.neutral is None:
            return self._baseline(frame, m, t)
        self.motion = max(self.motion, nonrigid_motion(self.neutral.mesh, m.mesh))
        return self._track(frame, m, t)

    def _eyes_needed(self) -> bool:
        """Eye openness matters for the neutral level and during a blink prompt only."""
        if self.neutral is None:
            return any(s.prompt is Prompt.BLINK for s in self.plan)
        return self.step < len(self.plan) and self.plan[self.step].prompt is Prompt.BLINK

    def _baseline(self, frame: Frame, m: FrameMeasure, t: float) -> bool:
        assert self.t0 is not None
        self.base.append(m)
        self.base_frames.append(frame.rgb)
        if t - self.t0 < self.cfg.baseline_s or len(self.base) < 3:
            return False
        yaws = np.array([b.yaw for b in self.base])
        pitches = np.array([b.pitch for b in self.base])
        self.yaw0, self.pitch0 = float(np.median(yaws)), float(np.median(pitches))
        self.earl0 = float(np.median([b.ear_left for b in self.base]))
        self.earr0 = float(np.median([b.ear_right for b in self.base]))
        self.aspect0 = float(np.median([b.aspect for b in self.base]))
        pick = int(np.argmin(np.abs(yaws - self.yaw0) + np.abs(pitches - self.pitch0)))
        self.neutral = self.base[pick]
        for b in self.base:
            self.motion = max(self.motion, nonrigid_motion(self.neutral.mesh, b.mesh))
        self._sample(self.base_frames[pick])
        self.base_frames.clear()
        self.baseline_end = t
        self.armed = True
        self._due(t)
        return False

    def _due(self, t: float) -> None:
        """The current step's prompt time (previous completion + its delay)."""
        if self.step < len(self.plan):
            self.shown_at = t + self.plan[self.step].delay_s

    def _classify(self, m: FrameMeasure) -> _Gesture:
        c = self.cfg
        dyaw, dpitch = m.yaw - self.yaw0, m.pitch - self.pitch0
        if abs(dyaw) < c.return_yaw_deg and abs(dpitch) < c.return_pitch_deg:
            return _Gesture.NEUTRAL
        ny, npitch = abs(dyaw) / c.yaw_deg, dpitch / c.pitch_deg
        if ny >= 1.0 and ny >= abs(npitch):
            return _Gesture.LEFT if dyaw > 0 else _Gesture.RIGHT
        if npitch >= 1.0 and npitch > ny:
            return _Gesture.UP
        return _Gesture.OTHER

    def _track(self, frame: Frame, m: FrameMeasure, t: float) -> bool:
        c = self.cfg
        gesture = self._classify(m)
        grey = _grey(frame.rgb)
        # Anchor the parallax at the most frontal neutral frame before a turn: anchoring at the
        # last neutral one (up to return_yaw_deg off) left small turns only ~8 degrees to show
        # their depth.
        frontal = abs(m.yaw - self.yaw0) <= abs(self.plane.anchor_yaw - self.yaw0)
        if gesture is _Gesture.NEUTRAL and (self.last_gesture is not _Gesture.NEUTRAL or frontal):
            self.plane.reset(grey, m.mesh, m.yaw)
        else:
            self.plane.step(grey)
        self.last_gesture = gesture
        if gesture in (_Gesture.LEFT, _Gesture.RIGHT):
            r = self.plane.parallax(m.mesh, m.yaw)
            if r is not None:
                self.turn_parallax = r if self.turn_parallax is None else max(self.turn_parallax, r)
        if gesture is _Gesture.NEUTRAL:
            self._turn_over()
        done = self.step >= len(self.plan)
        if done:
            # After the last response: wait for the face to come back to neutral, then sample
            # it once more (the "end" point of the identity chain).
            if gesture is _Gesture.NEUTRAL and self.eyes_closed_at is None:
                self._sample(frame.rgb)
                return True
            if self.ending_since is not None and t - self.ending_since > c.end_timeout_s:
                raise _Failed(LivenessFailure.PROMPT_TIMEOUT)
            return False
        step = self.plan[self.step]
        assert self.shown_at is not None
        shown = t >= self.shown_at
        if shown and self.announced < self.step:
            self.announced = self.step
            if self.on_prompt is not None:
                self.on_prompt(step)
        onset = None
        if gesture is _Gesture.NEUTRAL:
            self.armed = True
        elif gesture is not _Gesture.OTHER and self.armed:
            self.armed = False
            onset = gesture
        if onset is not None:
            if not shown or t - self.shown_at < c.min_reaction_s:
                raise _Failed(LivenessFailure.EARLY_RESPONSE)
            if _GESTURE_OF.get(step.prompt) is not onset:
                raise _Failed(LivenessFailure.WRONG_ORDER)
            return self._complete(frame, t)
        # Blinks are never "wrong": people blink unprompted. Only a blink prompt needs one,
        # closed after the prompt was shown and reopened inside the window. (Outside blink
        # steps the eyes are not measured: NaN makes both tests below false.)
        near = abs(m.yaw - self.yaw0) < c.yaw_deg and abs(m.pitch - self.pitch0) < c.pitch_deg
        closed = (
            m.ear_left < c.blink_close_ratio * self.earl0
            and m.ear_right < c.blink_close_ratio * self.earr0
            and m.aspect > c.blink_shape_ratio * self.aspect0
        )
        opened = (
            m.ear_left > c.blink_open_ratio * self.earl0
            and m.ear_right > c.blink_open_ratio * self.earr0
        )
        if near and closed and self.eyes_closed_at is None:
            self.eyes_closed_at = t
        elif opened and self.eyes_closed_at is not None:
            closed_at, self.eyes_closed_at = self.eyes_closed_at, None
            if step.prompt is Prompt.BLINK and closed_at >= self.shown_at + c.min_reaction_s:
                return self._complete(frame, t)
        if shown and t - self.shown_at > step.window_s:
            raise _Failed(
                LivenessFailure.NO_MICRO_MOTION
                if self.motion < c.motion_min
                else LivenessFailure.PROMPT_TIMEOUT
            )
        return False

    def _complete(self, frame: Frame, t: float) -> bool:
        self.step += 1
        self._sample(frame.rgb)
        if self.step >= len(self.plan):
            self.ending_since = t
        else:
            self._due(t)
        return False

    def _turn_over(self) -> None:
        if self.turn_parallax is not None:
            parallax, self.turn_parallax = self.turn_parallax, None
            if parallax < self.cfg.parallax_min:
                raise _Failed(LivenessFailure.FLAT_SURFACE)

    def finish_stream(self) -> None:
        """The frames ran out before the session was over."""
        if self.neutral is None:
            raise _Failed(LivenessFailure.NO_FACE)
        if self.motion < self.cfg.motion_min:
            raise _Failed(LivenessFailure.NO_MICRO_MOTION)
        raise _Failed(
            LivenessFailure.INCOMPLETE
            if self.step < len(self.plan)
            else LivenessFailure.PROMPT_TIMEOUT
        )

    def final_checks(self) -> None:
        self._turn_over()
        if self.motion < self.cfg.motion_min:
            raise _Failed(LivenessFailure.NO_MICRO_MOTION)
        if len(self.embeddings) < 2:
            raise _Failed(LivenessFailure.IDENTITY_CHANGED)
