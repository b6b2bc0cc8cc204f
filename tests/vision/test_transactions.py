"""A CI-sized guard of the shipped operating point, ISO/IEC 19795-1 style.

The default threshold was chosen on half "a" of LFW's people (the calibration split, seed 0 of
``devicebio eval transactions``); these people come from the other half, so the threshold was
never tuned on them. Each enrols through the product's consistency check and probes, with
their own photos, every other person's templates: 240 people (217 enrolled) give 46,872
zero-effort impostor transactions (measured: 2 false matches, FMR 4.3e-5, 95% interval
5.2e-6 to 1.5e-4). The test asserts the observed FMR is at most 1e-4 (at most 4 false matches).
What that can show: with 0 false matches, FMR < 6.4e-5 at 95% (rule of three); it tells the
shipped default from the old 0.40 (4.2e-3 per transaction on LFW, ~200 false matches expected
here) with no overlap. It reads ~820 photos: ~35 s of pipeline on an idle 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devicebio import decision
from devicebio.evaluation import transactions

pytestmark = pytest.mark.needs_lfw

PEOPLE = 240


def test_shipped_default_meets_fmr_1e_4_on_held_out_people(lfw_dir: Path, pipeline) -> None:
    images = lfw_dir / "images"
    listing = transactions.people_in(images)
    _, held_out = transactions.calibration_split(images)
    # people with 3 or 4 photos: they enrol and probe as impostors at the lowest cost per
    # transaction (genuine transactions need 6 photos; the full run measures those)
    chosen = [n for n in held_out if len(listing[n]) in (3, 4)][:PEOPLE]
    assert len(chosen) == PEOPLE
    report = transactions.evaluate(
        images, people=chosen, seeds=(), progress=False, pipeline=pipeline
    )
    assert report["policy"]["operating_point"] == decision.Policy.of().operating_point
    fmr = report["transactions"]["at_policy"]["fmr"]
    # 30,000 trials are the fewest where no false match shows FMR < 1e-4 (rule of three)
    assert fmr["trials"] >= 40_000, fmr["trials"]
    assert fmr["rate"] <= 1e-4, fmr
    assert report["failure_to_enrol"]["rate"] <= 0.25, report["failure_to_enrol"]


def test_one_pass_gives_the_products_mirrored_and_the_plain_embedding(
    lfw_dir: Path, pipeline
) -> None:
    """The evaluation embeds each photo once, both ways (for ``--compare-probe-mirror``): row 0
    must be what the product's pipeline stores, row 1 what it gives without the mirror."""
    import cv2
    import numpy as np

    path = sorted((lfw_dir / "images" / "Aaron_Peirsol").glob("*.jpg"))[0]
    both, why = transactions._acquire(pipeline, str(path))
    assert why == "acquired" and both is not None and both.shape == (2, 128)
    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    shipped = pipeline.analyze(rgb, select="center", gates=True)
    np.testing.assert_allclose(both[0], shipped.embedding, atol=1e-5)
    pipeline.mirror = False
    try:
        plain = pipeline.analyze(rgb, select="center", gates=True)
    finally:
        pipeline.mirror = True
    np.testing.assert_allclose(both[1], plain.embedding, atol=1e-5)
    assert float(np.linalg.norm(both[0] - both[1])) > 1e-3  # they are different embeddings
