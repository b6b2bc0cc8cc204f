"""A simulated screen recapture: genuine footage shown on a phone screen, filmed by a camera.

For the liveness evaluation's ``screen_replay`` and ``steered_screen_replay`` species when no
real recaptures are at hand (and for the CI-sized test, which must be deterministic): every
frame of the genuine footage goes through what a display and a second camera do to it, with
parameters drawn once per presentation from the evaluation's seeded generator:

- the display: gamut compression (a phone's primaries and the camera's white balance pull
  saturation in), a gamma mismatch and a raised black level (an LCD/OLED at viewing
  brightness never shows black);
- the pixel grid: the RGB sub-pixel stripes and the dark gaps between pixel rows, at a pitch
  of 1.6-3.2 camera pixels, slightly rotated, sampled at 2x and area-averaged down, so the
  camera aliases them into moire as a real one does;
- the geometry: the screen is a plane held in front of the camera (perspective of a few
  degrees, a dark bezel and the room around it), trembling a little as a hand does;
- specular glare: a soft highlight fixed on the glass (it moves with the screen, not the
  face);
- the camera: slight defocus blur and sensor noise.

It is a simulation: what it shows is whether the product's checks react to these cues, not
what a particular real phone does. Real recaptures are evaluated separately
(``--recaptures``; docs/data-recaptures.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ScreenRecapture"]


@dataclass(frozen=True)
class _Look:
    saturation: float
    gamma: float
    black: float
    white: float
    pitch: float
    grid_angle: float
    grid_depth: float
    tilt_x: float
    tilt_y: float
    scale: float
    glare_xy: tuple[float, float]
    glare_gain: float
    glare_radius: float
    blur: float
    noise: float
    tremor: tuple[tuple[float, float], ...]


class ScreenRecapture:
    """Renders frames as a phone screen showing them, filmed by another camera.

    One instance is one presentation: its screen, pose and glare are drawn once from ``rng``
    at construction; :meth:`render` is deterministic in (frame, t) apart from the sensor
    noise, which is drawn from ``rng`` too (so a seeded run is reproducible)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.look = _Look(
            saturation=float(rng.uniform(0.70, 0.88)),
            gamma=float(rng.uniform(0.80, 1.25)),
            black=float(rng.uniform(12.0, 28.0)),
            white=float(rng.uniform(215.0, 245.0)),
            pitch=float(rng.uniform(1.6, 3.2)),
            grid_angle=float(rng.uniform(-6.0, 6.0)),
            grid_depth=float(rng.uniform(0.25, 0.45)),
            tilt_x=float(rng.uniform(-8.0, 8.0)),
            tilt_y=float(rng.uniform(-8.0, 8.0)),
            scale=float(rng.uniform(0.82, 0.94)),
            glare_xy=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.05, 0.5))),
            glare_gain=float(rng.uniform(35.0, 80.0)),
            glare_radius=float(rng.uniform(0.12, 0.3)),
            blur=float(rng.uniform(0.6, 1.2)),
            noise=float(rng.uniform(1.5, 3.0)),
            tremor=tuple(
                (float(rng.uniform(0.3, 6.0)), float(rng.uniform(0, 2 * math.pi))) for _ in range(3)
            ),
        )
        self._grids: dict[tuple[int, int], np.ndarray] = {}
        self._glare: dict[tuple[int, int], np.ndarray] = {}
        self._room: dict[tuple[int, int], np.ndarray] = {}

    # ---- fixed per presentation ---------------------------------------------------------

    def _grid(self, h: int, w: int) -> np.ndarray:
        """The sub-pixel mask at 2x the frame size (float32, h*2 x w*2 x 3)."""
        if (h, w) not in self._grids:
            lk = self.look
            yy, xx = np.mgrid[0 : 2 * h, 0 : 2 * w].astype(np.float32) / 2.0
            a = math.radians(lk.grid_angle)
            u = (xx * math.cos(a) + yy * math.sin(a)) / lk.pitch
            v = (-xx * math.sin(a) + yy * math.cos(a)) / lk.pitch
            mask = np.empty((2 * h, 2 * w, 3), np.float32)
            row_gap = 1.0 - lk.grid_depth * (0.5 + 0.5 * np.cos(2 * math.pi * v))
            for c in range(3):  # R, G, B stripes a third of a pixel apart
                stripe = 0.5 + 0.5 * np.cos(2 * math.pi * (u - c / 3.0))
                mask[:, :, c] = (1.0 - lk.grid_depth + lk.grid_depth * 2.0 * stripe) * row_gap
            self._grids[(h, w)] = mask / float(mask.mean())
        return self._grids[(h, w)]

    def _glare_map(self, h: int, w: int) -> np.ndarray:
        if (h, w) not in self._glare:
            lk = self.look
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            cx, cy = lk.glare_xy[0] * w, lk.glare_xy[1] * h
            r = lk.glare_radius * max(h, w)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            self._glare[(h, w)] = (lk.glare_gain * blob)[:, :, None].astype(np.float32)
        return self._glare[(h, w)]

    def _room_for(self, h: int, w: int) -> np.ndarray:
        import cv2

        if (h, w) not in self._room:
            low = self.rng.uniform(40, 170, size=(5, 7, 1)) + self.rng.uniform(-12, 12, (5, 7, 3))
            room = cv2.resize(low.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
            self._room[(h, w)] = np.clip(room, 0, 255).astype(np.uint8)
        return self._room[(h, w)]

    # ---- per frame ------------------------------------------------------------------------

    def _homography(self, h: int, w: int, t: float) -> np.ndarray:
        """Screen (frame) coordinates -> camera coordinates at time t."""
        import cv2

        lk = self.look
        jitter = [1.5 * math.sin(2 * math.pi * f * t + p) for f, p in lk.tremor]
        tx, ty = math.radians(lk.tilt_x + jitter[2] * 0.3), math.radians(lk.tilt_y)
        half_w, half_h = w * lk.scale / 2, h * lk.scale / 2
        corners = np.array(
            [[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]]
        )
        pts = np.stack([corners[:, 0], corners[:, 1], np.zeros(4)], axis=1)
        ry = np.array(
            [[math.cos(tx), 0, math.sin(tx)], [0, 1, 0], [-math.sin(tx), 0, math.cos(tx)]]
        )
        rx = np.array(
            [[1, 0, 0], [0, math.cos(ty), -math.sin(ty)], [0, math.sin(ty), math.cos(ty)]]
        )
        pts = pts @ (rx @ ry).T
        f = 1.2 * max(h, w)
        proj = f * pts[:, :2] / (f + pts[:, 2:3]) + np.array([w / 2 + jitter[0], h / 2 + jitter[1]])
        src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        return cv2.getPerspectiveTransform(src, proj.astype(np.float32))

    def render(self, rgb: np.ndarray, t: float) -> np.ndarray:
        """The camera's view of ``rgb`` shown on the screen at time ``t`` (uint8 RGB)."""
        import cv2

        lk = self.look
        h, w = rgb.shape[:2]
        x = rgb.astype(np.float32) / 255.0
        grey = x.mean(axis=2, keepdims=True)
        x = grey + lk.saturation * (x - grey)  # gamut compression
        x = np.clip(x, 0.0, 1.0) ** lk.gamma
        shown = lk.black + (lk.white - lk.black) * x  # the panel's black and white levels
        big = cv2.resize(shown, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
        big *= self._grid(h, w)
        screen = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)  # the camera aliases
        screen += self._glare_map(h, w)  # on the glass: fixed in screen coordinates
        # a dark bezel around the panel, then the screen as a plane in the room
        bezel = max(4, round(0.03 * min(h, w)))
        framed = np.full((h + 2 * bezel, w + 2 * bezel, 3), 8.0, np.float32)
        framed[bezel : bezel + h, bezel : bezel + w] = screen
        m = self._homography(h, w, t)
        shift = np.array([[1, 0, -bezel], [0, 1, -bezel], [0, 0, 1]], np.float64)
        out = cv2.warpPerspective(
            np.clip(framed, 0, 255).astype(np.uint8),
            m @ shift,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_TRANSPARENT,
            dst=self._room_for(h, w).copy(),
        ).astype(np.float32)
        blurred = np.asarray(cv2.GaussianBlur(out, (0, 0), lk.blur), np.float32)
        blurred += self.rng.normal(0.0, lk.noise, size=blurred.shape).astype(np.float32)
        return np.ascontiguousarray(np.clip(blurred, 0, 255).astype(np.uint8))
