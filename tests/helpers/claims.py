"""Liveness claims that hold up for a given challenge, for tests that sign a face
verification by hand: the verifier checks a passed claim's sequence hash and frame count
against the challenge whatever its policy, so a claim is made per challenge."""

from __future__ import annotations

from devicebio.hazmat.credentials import UserVerification
from devicebio.protocol import (
    LIVENESS_KIND,
    LivenessClaim,
    Method,
    liveness_plan,
    liveness_sequence_hash,
    minimum_frames,
)

MODEL = "dlib_resnet_v1@6a1b2c3d4e5f6071"


def live_claim(challenge: bytes, *, frames: int | None = None) -> LivenessClaim:
    """A passed active-challenge claim bound to ``challenge``'s plan."""
    plan = liveness_plan(challenge)
    return LivenessClaim(
        LIVENESS_KIND,
        True,
        liveness_sequence_hash(challenge, plan),
        minimum_frames(plan) + 40 if frames is None else frames,
    )


def face(challenge: bytes, *, model: str = MODEL, frames: int | None = None) -> UserVerification:
    """A verified face with passed liveness for ``challenge``."""
    return UserVerification(Method.FACE, live_claim(challenge, frames=frames), model, True)
