"""Face alignment: the 150x150 chip dlib's face-recognition ResNet expects.

:func:`face_chip` does what ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` does
(dlib's ``get_face_chip_details`` followed by ``extract_image_chip``), with OpenCV doing the
resampling:

1. Fit the least-squares similarity transform from dlib's 5-point template (the unit square
   padded by ``padding`` on every side and scaled to ``size``) to the image landmarks.
2. The crop is a square centred on the transformed chip centre, ``size * scale - 1`` pixels
   wide, turned by the transform's angle; corner pixels of the chip land on its corners.
3. When the square is more than about twice the chip (``size * scale > 299``) the image is
   first halved (dlib's ``pyramid_down<2>``: a 5-tap binomial filter, then every other pixel),
   as often as needed, so that the bilinear resampling does not alias.
4. Bilinear resampling; a chip pixel whose 2x2 source neighbourhood is not entirely inside
   the image is 0, and values are truncated to integers, both as in dlib.

The differences left are OpenCV's 1/32-pixel quantisation of sample positions and float32
arithmetic: on real faces the chip differs from dlib's by well under one grey level on average.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from devicebio.errors import DeviceBioError, Reason
from devicebio.vision._checks import check_image

#: dlib's 5-point template (get_face_chip_details) in the unit square, in the landmark order
#: of the 5-point predictor: right eye outer/inner corner, left eye outer/inner, nose bottom.
TEMPLATE_5 = np.array(
    [
        [0.8596, 0.2135],
        [0.6461, 0.2290],
        [0.1206, 0.2137],
        [0.3341, 0.2291],
        [0.4901, 0.6278],
    ],
    dtype=np.float64,
)
CHIP_SIZE = 150
CHIP_PADDING = 0.25
MIN_IMAGE_SIDE = 8
MAX_CHIP_SIZE = 2048
MAX_PADDING = 10.0
# Coordinates beyond this are not landmarks in any real image; bounding them keeps every
# intermediate well inside float and int ranges.
_MAX_COORD = 1e7


def _bad(message: str) -> DeviceBioError:
    return DeviceBioError(Reason.BAD_IMAGE, message)


def _check_image(image: object) -> np.ndarray:
    return check_image(image, grey_ok=True, min_side=MIN_IMAGE_SIDE, max_side=2**31)


def _check_landmarks(landmarks5: object) -> np.ndarray:
    try:
        pts = np.asarray(landmarks5, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _bad("landmarks5 must be a (5, 2) array of numbers") from exc
    if pts.shape != (5, 2):
        raise _bad(f"landmarks5 must have shape (5, 2), got {pts.shape}")
    if not np.isfinite(pts).all() or np.abs(pts).max() > _MAX_COORD:
        raise _bad("landmarks5 must be finite image coordinates")
    return pts


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, float, float, float]:
    """(a, b, tx, ty) of the least-squares similarity x -> [[a, -b], [b, a]] x + t, src -> dst.

    The closed 2-D form of Umeyama's solution, which dlib's find_similarity_transform computes.
    """
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    norm = float((s * s).sum())
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    tx = float(md[0] - (a * ms[0] - b * ms[1]))
    ty = float(md[1] - (b * ms[0] + a * ms[1]))
    return a, b, tx, ty


# Rectangles are (left, top, right, bottom) with dlib's inclusive edges: width = right-left+1.
_Rect = tuple[float, float, float, float]


def _area(r: _Rect) -> float:
    if r[0] > r[2] or r[1] > r[3]:
        return 0.0
    return (r[2] - r[0] + 1) * (r[3] - r[1] + 1)


def _rect_down(r: _Rect) -> _Rect:
    """Where dlib's pyramid_down<2> says a rectangle lands one level down."""
    return (r[0] / 2 - 1.25, r[1] / 2 - 0.75, r[2] / 2 - 1.25, r[3] / 2 - 0.75)


def _lround(x: float) -> int:
    """C's lround: halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float32)


def _pyramid_down(img: np.ndarray) -> np.ndarray:
    """One level of dlib's pyramid_down<2>.

    Output pixel (i, j) is the [1 4 6 4 1] x [1 4 6 4 1] weighted sum of the 5x5 window whose
    top-left is (2i, 2j), divided by 256 with truncation; the output is (h-3)//2 x (w-3)//2
    and empty when a side is 8 or less. The sums stay below 2**16, so float32 holds them
    exactly and OpenCV's separable filter gives dlib's integers.
    """
    h, w = img.shape[:2]
    if h <= 8 or w <= 8:
        return img[:0, :0]
    h2, w2 = (h - 3) // 2, (w - 3) // 2
    try:
        sums = cv2.sepFilter2D(
            img.astype(np.float32),
            cv2.CV_32F,
            _BINOMIAL,
            _BINOMIAL,
            anchor=(0, 0),
            borderType=cv2.BORDER_CONSTANT,
        )
    except cv2.error as exc:  # OpenCV's limits are not the caller's business to know
        raise _bad("image region too large to resample") from exc
    return (sums[0 : 2 * h2 : 2, 0 : 2 * w2 : 2] * np.float32(1 / 256)).astype(np.uint8)


def face_chip(
    image: np.ndarray,
    landmarks5: np.ndarray,
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
) -> np.ndarray:
    """The aligned ``size`` x ``size`` x 3 uint8 RGB face chip, like ``dlib.get_face_chip``.

    ``image`` is uint8 RGB (H, W, 3) or grey (H, W) (a grey image gives a grey chip with its
    value in all three channels). ``landmarks5`` are the 5 points of :class:`ShapePredictor5`
    in image pixels. Parts of the chip that fall outside the image are black.

    Raises ``DeviceBioError(Reason.BAD_IMAGE)`` for an unusable image, landmarks that are not
    five finite points or collapse onto one, a chip lying entirely outside the image, or a
    ``size`` / ``padding`` out of range.
    """
    img = _check_image(image)
    pts = _check_landmarks(landmarks5)
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise _bad("size must be an integer")
    size = int(size)
    if not MIN_IMAGE_SIDE <= size <= MAX_CHIP_SIZE:
        raise _bad(f"size must be in [{MIN_IMAGE_SIDE}, {MAX_CHIP_SIZE}]")
    try:
        pad = float(padding)
    except (TypeError, ValueError) as exc:
        raise _bad("padding must be a number") from exc
    if not 0.0 <= pad <= MAX_PADDING:  # also refuses NaN
        raise _bad(f"padding must be in [0, {MAX_PADDING}]")

    chip_pts = (pad + TEMPLATE_5) / (2 * pad + 1) * size
    a, b, tx, ty = _similarity(chip_pts, pts)
    scale = math.hypot(a, b)
    width = size * scale
    if not width >= 2.0:
        raise _bad("landmarks5 are degenerate (the face would be under 2 pixels wide)")
    angle = math.atan2(b, a)
    cx = a * size / 2 - b * size / 2 + tx
    cy = b * size / 2 + a * size / 2 + ty
    half = (width - 1) / 2
    rect: _Rect = (cx - half, cy - half, cx + half, cy + half)
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def rotated(r: _Rect, x: float, y: float) -> tuple[float, float]:
        # Rotation about the rectangle's centre, as dlib's rotate_point.
        mx, my = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
        return (cos_a * (x - mx) - sin_a * (y - my) + mx, sin_a * (x - mx) + cos_a * (y - my) + my)

    # dlib crops the turned rectangle plus a margin that widens with every halving it will
    # make (2 pixels, then 2 * previous + 2), so that the filter sees no crop edge.
    target = float(size * size)
    grow = 2.0
    down = _rect_down(rect)
    while _area(down) > target:
        down = _rect_down(down)
        grow = grow * 2 + 2
    corners = [
        rotated(rect, x, y)
        for x, y in ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]), (rect[2], rect[3]))
    ]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    height, width_img = img.shape[:2]
    left = _lround(max(min(xs) - grow, 0.0))
    top = _lround(max(min(ys) - grow, 0.0))
    right = _lround(min(max(xs) + grow, width_img - 1.0))
    bottom = _lround(min(max(ys) + grow, height - 1.0))
    if left > right or top > bottom:
        raise _bad("the face lies outside the image")
    source = img[top : bottom + 1, left : right + 1]

    # Halve while the rectangle one level down still holds more pixels than the chip.
    local: _Rect = (rect[0] - left, rect[1] - top, rect[2] - left, rect[3] - top)
    while _area(_rect_down(local)) > target:
        local = _rect_down(local)
        source = _pyramid_down(source)
    if source.shape[0] < 2 or source.shape[1] < 2:
        return np.zeros((size, size, 3), dtype=np.uint8)

    # Affine map from chip pixel (u, v) to source position: chip corners onto the turned
    # rectangle's corners.
    x0, y0 = rotated(local, local[0], local[1])
    x1, y1 = rotated(local, local[2], local[1])
    x2, y2 = rotated(local, local[0], local[3])
    n = size - 1
    m = np.array(
        [[(x1 - x0) / n, (x2 - x0) / n, x0], [(y1 - y0) / n, (y2 - y0) / n, y0]],
        dtype=np.float64,
    )
    sh, sw = source.shape[:2]
    src = source.astype(np.float32)
    try:
        warped = cv2.warpAffine(
            src,
            m,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
    except cv2.error as exc:
        raise _bad("image region too large to resample") from exc
    # dlib truncates; the small epsilon absorbs float32 error on exact values.
    chip = np.floor(warped + np.float32(1e-3)).clip(0, 255).astype(np.uint8)

    # dlib zeroes every pixel whose 2x2 neighbourhood is not fully inside the source; OpenCV
    # would blend with the border instead. The map is affine, so checking the chip's corners
    # tells whether any pixel can be affected.
    cu = np.array([0.0, n, 0.0, n])
    cv = np.array([0.0, 0.0, n, n])
    cx_src = m[0, 0] * cu + m[0, 1] * cv + m[0, 2]
    cy_src = m[1, 0] * cu + m[1, 1] * cv + m[1, 2]
    if cx_src.min() < 0 or cy_src.min() < 0 or cx_src.max() >= sw - 1 or cy_src.max() >= sh - 1:
        u = np.arange(size, dtype=np.float64)
        xs_src = m[0, 0] * u[None, :] + m[0, 1] * u[:, None] + m[0, 2]
        ys_src = m[1, 0] * u[None, :] + m[1, 1] * u[:, None] + m[1, 2]
        inside = (xs_src >= 0) & (xs_src < sw - 1) & (ys_src >= 0) & (ys_src < sh - 1)
        chip[~inside] = 0
    if chip.ndim == 2:
        chip = np.repeat(chip[:, :, None], 3, axis=2)
    return chip


def mirror(chip: np.ndarray) -> np.ndarray:
    """The chip flipped left-right (a new array), e.g. to average an embedding with its mirror.

    Raises ``DeviceBioError(Reason.BAD_IMAGE)`` unless ``chip`` is a uint8 (H, W, 3) array.
    """
    if not isinstance(chip, np.ndarray) or chip.dtype != np.uint8:
        raise _bad("chip must be a uint8 numpy array")
    if chip.ndim != 3 or chip.shape[2] != 3 or chip.shape[0] < 1 or chip.shape[1] < 1:
        raise _bad(f"chip must have shape (H, W, 3), got {chip.shape}")
    return np.ascontiguousarray(chip[:, ::-1])
