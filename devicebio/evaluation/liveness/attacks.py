"""Rendered presentation attacks: a printed photo held still, trembling, or tilted on cue in
front of a simulated camera. (Replay, identity mismatch, face swap and the two screen
replays, through :mod:`.screen`, are built from the performers' real footage by the runner.)"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from devicebio.evaluation.liveness.performers import REACTION_S
from devicebio.sources import Frame

SPECIES = (
    "still_photo",
    "moving_photo",
    "rotated_photo",
    "replay",
    "identity_mismatch",
    "face_swap",
    "screen_replay",
    "steered_screen_replay",
)
SCREEN_SPECIES = ("screen_replay", "steered_screen_replay")
PHOTO_SPECIES = ("still_photo", "moving_photo", "rotated_photo")
PHOTO_FPS = 30.0
CANVAS = (480, 640)  # height, width of the simulated camera for photo attacks


def _canvas(rng: np.random.Generator) -> np.ndarray:
    """A plausible room behind the print: smooth shading plus texture."""
    import cv2

    h, w = CANVAS
    low = rng.uniform(60, 200, size=(6, 8, 1)) + rng.uniform(-15, 15, size=(6, 8, 3))
    low = low.astype(np.float32)
    bg = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    bg += rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


class PhotoAttack:
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
