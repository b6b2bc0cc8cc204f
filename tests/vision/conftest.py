from __future__ import annotations

from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2", reason="the vision tests need the [device] extra")


@pytest.fixture(scope="session")
def load_lfw(lfw_dir: Path):
    def load(rel: str):
        bgr = cv2.imread(str(lfw_dir / "images" / rel))
        assert bgr is not None, rel
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return load
