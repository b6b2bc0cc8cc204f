"""The flat-surface test: a photo or a screen turned in front of the camera moves like a plane.

Image texture at the face mesh's points is followed by optical flow from the most frontal
neutral frame; a homography fits a plane's motion exactly, so the residual left after the
best homography (in inter-ocular units, per sine of the yaw turned) separates a real head,
whose nose and cheeks move off any plane, from a print or a screen. The threshold and its
calibration are documented on :attr:`devicebio.liveness.LivenessConfig.parallax_min`.

Also here: the landmark motion left after a similarity transform (a static image has none)
and the inter-ocular distance that is the unit of every landmark motion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["PlaneTracker", "grey", "inter_ocular", "nonrigid_motion", "planar_residual"]

# Mesh indices of the outer eye corners (subject's right, left): the inter-ocular scale.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


def planar_residual(src: np.ndarray, dst: np.ndarray, scale: float) -> float:
    """RMS distance of the points ``dst`` (N x 2) from the best least-squares homography image
    of ``src``, divided by ``scale`` (the inter-ocular distance). Near 0 when both are views of
    one plane (a photo or a screen, however it is tilted); a real head's nose and cheeks move
    off any plane when it turns."""
    import cv2

    a = np.asarray(src, np.float64).reshape(-1, 2)
    b = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(a) < 8 or scale <= 1e-6:
        return 0.0
    h, _ = cv2.findHomography(a, b, 0)
    if h is None:
        return 0.0
    proj = cv2.perspectiveTransform(a[None], h)[0]
    return float(np.sqrt(np.mean(np.sum((proj - b) ** 2, axis=1))) / scale)


# Every third mesh point: texture all over the face, nose and cheeks included.
_TRACK_IDX = np.arange(0, 468, 3)
_MIN_TRACKED = 24
# A turned frame is >= yaw_deg from neutral and its anchor < return_yaw_deg: at least this apart.
_MIN_SWEPT_DEG = 8.0
_MAX_ROUND_TRIP_PX = 1.0
# five pyramid levels follow a 15 fps head turn (up to ~40 px between frames at 640 px)
_LK: dict[str, Any] = {"winSize": (21, 21), "maxLevel": 5}


class PlaneTracker:
    """Image texture at the mesh points, followed by optical flow from the last neutral frame.

    Why not the mesh itself: the mesh model imposes a face's 3-D shape prior, so on a tilted
    photo its points move off the photo's plane much like a real head's (measured: homography
    residual of the mesh points ~0.10 IOD for both). Optical flow follows the pixels, and the
    pixels of a print move exactly by a homography however it is tilted.
    """

    def __init__(self) -> None:
        self.anchor: np.ndarray | None = None
        self.anchor_yaw = 0.0
        self.points: np.ndarray | None = None
        self.ok: np.ndarray | None = None
        self.prev: np.ndarray | None = None

    def reset(self, grey: np.ndarray, mesh: np.ndarray, yaw: float) -> None:
        pts = np.ascontiguousarray(mesh[_TRACK_IDX, :2], np.float32).reshape(-1, 1, 2)
        self.anchor, self.points, self.prev = pts.copy(), pts, grey
        self.anchor_yaw = yaw
        self.ok = np.ones(len(pts), bool)

    def step(self, grey: np.ndarray) -> None:
        import cv2

        if self.prev is None or self.points is None or self.ok is None:
            return
        if self.prev.shape != grey.shape:
            self.anchor = self.points = self.prev = self.ok = None
            return
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            self.prev, grey, self.points, self.points.copy(), **_LK
        )
        # Forward-backward check: a point that does not track back to where it came from was
        # lost (on a print tilted nearly edge-on, or on a fast turn) and would otherwise add
        # a large residual that looks like parallax.
        back, status_back, _ = cv2.calcOpticalFlowPyrLK(
            grey, self.prev, moved, self.points.copy(), **_LK
        )
        round_trip = np.linalg.norm((back - self.points).reshape(-1, 2), axis=1)
        self.ok &= (status.reshape(-1) == 1) & (status_back.reshape(-1) == 1)
        self.ok &= round_trip < _MAX_ROUND_TRIP_PX
        self.points, self.prev = np.asarray(moved, np.float32), grey

    def parallax(self, mesh: np.ndarray, yaw: float) -> float | None:
        """The planar residual since the anchor (in inter-ocular units of ``mesh``, the
        current frame's) per unit sine of the yaw turned since then.

        Why per sine: a real head's off-plane displacement grows with the sine of the angle it
        turned (measured on the shared webcam turns: residual ~0.0035 IOD per degree up to
        45 degrees), so a small turn is judged as fairly as a wide one; a flat print's residual
        is tracking noise whatever the angle the mesh reads into it.
        """
        if self.anchor is None or self.points is None or self.ok is None:
            return None
        if int(self.ok.sum()) < _MIN_TRACKED:
            return None
        swept = max(abs(yaw - self.anchor_yaw), _MIN_SWEPT_DEG)
        residual = planar_residual(self.anchor[self.ok], self.points[self.ok], inter_ocular(mesh))
        return residual / math.sin(math.radians(swept))


def nonrigid_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Landmark motion left after the best similarity transform, in inter-ocular units."""
    pa = np.asarray(a, np.float64)[:, :2]
    pb = np.asarray(b, np.float64)[:, :2]
    ca, cb = pa - pa.mean(0), pb - pb.mean(0)
    za = ca[:, 0] + 1j * ca[:, 1]
    zb = cb[:, 0] + 1j * cb[:, 1]
    denom = float(np.vdot(za, za).real)
    if denom < 1e-9:
        return 0.0
    s = np.vdot(za, zb) / denom
    resid = zb - s * za
    return float(np.sqrt(np.mean(np.abs(resid) ** 2)) / max(inter_ocular(pb), 1e-6))


def inter_ocular(mesh: np.ndarray) -> float:
    """Distance between the outer eye corners: the unit of every landmark motion here."""
    return float(np.linalg.norm(mesh[LEFT_EYE_OUTER, :2] - mesh[RIGHT_EYE_OUTER, :2]))


def grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
