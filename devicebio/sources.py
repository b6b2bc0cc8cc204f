"""Where frames come from: a camera, a video file, a folder of images, or a test double.

Every source yields :class:`Frame` (an RGB ``uint8`` array and a timestamp in seconds) and
raises ``DeviceBioError(FRAME_SOURCE)`` with a hint when it cannot deliver: no camera, an
unreadable file, a format OpenCV cannot decode. Frames live in memory only.

``open_source("camera")``, ``open_source("camera:1")``, ``open_source("clip.mp4")``,
``open_source("photos/")`` or ``open_source("face.jpg")`` pick the right one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from devicebio.errors import DeviceBioError, Reason

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".mpg", ".mpeg", ".webm", ".m4v"}


@dataclass(frozen=True)
class Frame:
    rgb: np.ndarray = field(repr=False)
    timestamp: float  # seconds; monotonic within one source


class FrameSource(Protocol):
    """Anything that yields frames; ``close`` releases the device or file."""

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def _cv2():  # type: ignore[no-untyped-def]
    try:
        import cv2
    except ImportError:
        raise DeviceBioError(
            Reason.DEPENDENCY_MISSING,
            "frame sources need OpenCV",
            hint="pip install 'devicebio[device]'",
        ) from None
    return cv2


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class StaticFrames:
    """A test double (and a way to feed frames an app already has): arrays in, frames out.

    Timestamps advance by ``1 / fps`` unless given explicitly.
    """

    def __init__(
        self, images: Iterable[np.ndarray], *, fps: float = 30.0, timestamps: Iterable[float] = ()
    ) -> None:
        self._images = list(images)
        stamps = list(timestamps)
        self._stamps = stamps if stamps else [i / fps for i in range(len(self._images))]
        if len(self._stamps) != len(self._images):
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "one timestamp per image")

    def frames(self) -> Iterator[Frame]:
        for image, stamp in zip(self._images, self._stamps, strict=True):
            yield Frame(image, stamp)

    def close(self) -> None:
        pass


class ImageFolderSource:
    """Every image file in a folder (sorted by name), or one image file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_file():
            self._files = [self.path]
        elif self.path.is_dir():
            self._files = sorted(
                p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            raise DeviceBioError(
                Reason.FRAME_SOURCE,
                f"no such image file or folder: {self.path}",
                hint="give a folder of photos (jpg/png) or one photo",
            )
        if not self._files:
            raise DeviceBioError(
                Reason.FRAME_SOURCE,
                f"no images (jpg, png, ...) in {self.path}",
                hint="give a folder that holds photos of one person",
            )

    def frames(self) -> Iterator[Frame]:
        cv2 = _cv2()
        for n, path in enumerate(self._files):
            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if bgr is None or bgr.dtype != np.uint8:
                raise DeviceBioError(
                    Reason.FRAME_SOURCE,
                    f"cannot decode {path.name} as an 8-bit image",
                    hint="use JPEG or PNG files",
                )
            yield Frame(_to_rgb(bgr), float(n))

    def close(self) -> None:
        pass


class _CaptureSource:
    """Common to cameras and video files: an OpenCV VideoCapture."""

    def __init__(self, target: int | str, what: str, hint: str) -> None:
        cv2 = _cv2()
        self._cap = cv2.VideoCapture(target)
        self._what = what
        if not self._cap.isOpened():
            self._cap.release()
            raise DeviceBioError(Reason.FRAME_SOURCE, f"cannot open {what}", hint=hint)

    def _read(self) -> np.ndarray | None:
        ok, bgr = self._cap.read()
        return _to_rgb(bgr) if ok and bgr is not None else None

    def close(self) -> None:
        self._cap.release()


class VideoFileSource(_CaptureSource):
    """Frames of a video file, with the file's own timestamps (variable frame rate is fine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DeviceBioError(
                Reason.FRAME_SOURCE, f"no such video file: {self.path}", hint="check the path"
            )
        super().__init__(
            str(self.path), f"video {self.path.name}", "use a format OpenCV reads (mp4, mov, avi)"
        )

    def frames(self) -> Iterator[Frame]:
        cv2 = _cv2()
        count = 0
        while (rgb := self._read()) is not None:
            count += 1
            yield Frame(rgb, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        if count == 0:
            raise DeviceBioError(
                Reason.FRAME_SOURCE,
                f"{self.path.name} has no decodable frames",
                hint="re-encode it as H.264 mp4",
            )


class CameraSource(_CaptureSource):
    """A live camera by index (0 = the default one) or device path."""

    def __init__(
        self, device: int | str = 0, *, width: int = 640, height: int = 480, max_frames: int = 0
    ) -> None:
        super().__init__(
            device,
            f"camera {device}",
            "check that a camera is connected and not used by another program; "
            "or use --source with a video file or a folder of photos",
        )
        cv2 = _cv2()
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._max = max_frames
        self._t0 = time.monotonic()

    def frames(self) -> Iterator[Frame]:
        n = 0
        while self._max == 0 or n < self._max:
            rgb = self._read()
            if rgb is None:
                raise DeviceBioError(
                    Reason.FRAME_SOURCE,
                    "the camera stopped delivering frames",
                    hint="reconnect the camera, or use the PIN",
                )
            n += 1
            yield Frame(rgb, time.monotonic() - self._t0)


def open_source(spec: str) -> FrameSource:
    """ "camera", "camera:N", "camera:/dev/videoN", a video file, an image file or a folder."""
    if spec == "camera" or spec.startswith("camera:"):
        device = spec.partition(":")[2] or "0"
        return CameraSource(int(device) if device.isdigit() else device)
    path = Path(spec)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource(path)
    if path.suffix.lower() in VIDEO_SUFFIXES or path.is_file():
        return VideoFileSource(path)
    raise DeviceBioError(
        Reason.FRAME_SOURCE,
        f"no such source: {spec}",
        hint="use camera, camera:N, a video file, a photo or a folder of photos",
    )
