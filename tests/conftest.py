from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _data_dir(env: str, default: Path, what: str) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.is_dir():
        pytest.skip(
            f"{what} not found at {path}: put ../shared beside the repository "
            f"or set {env} to the folder"
        )
    return path


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """The LFW folder (images/ and pairs.txt); override with DEVICEBIO_LFW."""
    return _data_dir("DEVICEBIO_LFW", SHARED / "data" / "lfw", "LFW images")


@pytest.fixture(scope="session")
def video_dir() -> Path:
    """The real face videos; override with DEVICEBIO_VIDEO."""
    return _data_dir("DEVICEBIO_VIDEO", SHARED / "data" / "video", "face videos")


@pytest.fixture(scope="session")
def pipeline():
    """One real face pipeline for the whole run (models build on first use, offline)."""
    pytest.importorskip("cv2", reason="the face pipeline needs the [device] extra")
    from devicebio.vision.pipeline import FacePipeline

    return FacePipeline()
