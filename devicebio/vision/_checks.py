"""One gatekeeper for images entering any vision stage: hostile arrays stop here with
``BAD_IMAGE``, never deep inside OpenCV or onnxruntime."""

from __future__ import annotations

import numpy as np

from devicebio.errors import DeviceBioError, Reason


def check_image(
    image: object, *, grey_ok: bool = False, min_side: int = 16, max_side: int = 8192
) -> np.ndarray:
    """``image`` as a C-contiguous uint8 array: RGB (H, W, 3), or grey (H, W) if ``grey_ok``,
    with every side in [min_side, max_side]."""
    if not isinstance(image, np.ndarray):
        raise DeviceBioError(
            Reason.BAD_IMAGE, f"an image is a numpy array, not {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise DeviceBioError(Reason.BAD_IMAGE, f"an image is uint8, not {image.dtype}")
    rgb = image.ndim == 3 and image.shape[2] == 3
    if not (rgb or (grey_ok and image.ndim == 2)):
        wanted = "grey (H, W) or RGB (H, W, 3)" if grey_ok else "RGB (H, W, 3)"
        raise DeviceBioError(Reason.BAD_IMAGE, f"an image is {wanted}, not shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < min_side or max(h, w) > max_side:
        raise DeviceBioError(
            Reason.BAD_IMAGE, f"image {w}x{h}: sides must be {min_side}..{max_side} pixels"
        )
    return np.ascontiguousarray(image)
