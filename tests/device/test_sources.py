"""Frame sources: each delivers RGB frames with timestamps, or a typed error with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the device tests need the [device] extra (numpy)")

cv2 = pytest.importorskip("cv2", reason="frame sources need the [device] extra")

from devicebio.errors import DeviceBioError, Reason  # noqa: E402
from devicebio.sources import (  # noqa: E402
    CameraSource,
    ImageFolderSource,
    StaticFrames,
    VideoFileSource,
    open_source,
)


def frame_source_error(fn, *args) -> DeviceBioError:
    with pytest.raises(DeviceBioError) as info:
        result = fn(*args)
        if hasattr(result, "frames"):
            list(result.frames())
    assert info.value.reason is Reason.FRAME_SOURCE
    assert info.value.hint, "every frame-source error says what to do"
    return info.value


def test_static_frames_are_a_test_double_with_timestamps() -> None:
    images = [np.zeros((40, 40, 3), np.uint8)] * 3
    frames = list(StaticFrames(images, fps=10).frames())
    assert [f.timestamp for f in frames] == [0.0, 0.1, 0.2]
    with pytest.raises(DeviceBioError):
        StaticFrames(images, timestamps=[0.0])


def test_image_folder(tmp_path: Path, lfw_dir: Path) -> None:
    src = lfw_dir / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    (tmp_path / "b.jpg").write_bytes(src.read_bytes())
    grey = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "a.png"), grey)
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(open_source(str(tmp_path)).frames())
    assert len(frames) == 2
    assert all(f.rgb.shape == (250, 250, 3) and f.rgb.dtype == np.uint8 for f in frames)
    # RGB, not OpenCV's BGR: the red channel of a JPEG read here equals OpenCV's third.
    bgr = cv2.imread(str(src))
    assert np.array_equal(frames[1].rgb[..., 0], bgr[..., 2])


def test_video_file_with_its_own_timestamps(video_dir: Path) -> None:
    source = open_source(str(video_dir / "grid_bbaf2n.mpg"))
    assert isinstance(source, VideoFileSource)
    frames = []
    for frame in source.frames():
        frames.append(frame)
        if len(frames) == 10:
            break
    source.close()
    assert frames[0].rgb.shape == (288, 360, 3)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]


def test_missing_camera() -> None:
    error = frame_source_error(CameraSource, 97)
    assert "camera" in str(error)


def test_missing_paths(tmp_path: Path) -> None:
    frame_source_error(open_source, str(tmp_path / "nope.mp4"))
    frame_source_error(open_source, str(tmp_path / "nope"))
    frame_source_error(ImageFolderSource, tmp_path)  # empty folder


def test_unreadable_image(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    frame_source_error(open_source, str(tmp_path))


def test_wrong_video_format(tmp_path: Path) -> None:
    fake = tmp_path / "clip.mp4"
    fake.write_text("this is not a video")
    frame_source_error(open_source, str(fake))
