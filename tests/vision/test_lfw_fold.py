"""A CI-sized accuracy guard: one LFW fold (600 pairs) through the full pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicebio.evaluation import lfw

pytestmark = pytest.mark.needs_lfw


def test_one_fold_accuracy_at_least_98_percent(lfw_dir: Path, pipeline) -> None:
    report = lfw.evaluate(
        lfw_dir / "images", lfw_dir / "pairs.txt", folds=[0], progress=False, pipeline=pipeline
    )
    assert report["pairs"] == 600
    assert report["no_face_images"] <= 1
    assert report["accuracy_mean"] >= 0.98, report["accuracy_mean"]
