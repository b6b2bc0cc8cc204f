"""Outcomes: what a user is told about a face attempt, and what they may never carry."""

from __future__ import annotations

import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.outcome import Outcome, OutcomeCode


@pytest.mark.parametrize(
    "code", ["matched", "no_match", "liveness_failed", "locked_out", "timeout", "no_face"]
)
def test_an_outcome_cannot_carry_a_match_distance(code: str) -> None:
    """Issue 10 #11: only quality checks carry a measurement; a face distance (or a spread of
    enrolment captures) put into an Outcome would reach a message, a log or JSON."""
    with pytest.raises(DeviceBioError) as info:
        Outcome(OutcomeCode(code), 0.71, 0.6)
    assert info.value.reason is Reason.INVALID_ARGUMENT


def test_several_faces_carries_a_face_count_only() -> None:
    assert Outcome(OutcomeCode.SEVERAL_FACES, 2.0, 1.0).measured == 2.0
    with pytest.raises(DeviceBioError):
        Outcome(OutcomeCode.SEVERAL_FACES, 1.4, 0.4)  # the enrolment spread of issue 10 #11
