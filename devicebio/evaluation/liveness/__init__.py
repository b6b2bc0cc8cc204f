"""``devicebio eval liveness``: active liveness measured the ISO/IEC 30107-3 way.

Genuine presentations are simulated users built from real footage: each annotated clip in
``video_segments.json`` (frame ranges of real videos: neutral, turn_left, turn_right, look_up,
blink) is a piece of a real performance. A :class:`~.performers.Performer` yields the person's
neutral frames as a camera would, and when the liveness check shows a prompt (its ``on_prompt``
callback) the performer answers it after a human reaction time of 0.3-0.8 s with one of that
same person's clips for that prompt, then goes back to neutral. Timestamps advance at the
video's own frame rate. Every prompt of a session is answered by ONE person's footage. A person
with a turn in only one direction answers the other direction with the horizontal mirror image
of their own turn (a mirrored real head turn is still a real 3-D head; reported as ``mirrored``
in the person summary). Only one person in the footage shows every prompt type (tvl); the
others lack a blink or a look-up on camera, so they take part only in sessions whose challenge
asks nothing they cannot show: for them the challenge is redrawn until its plan fits (counted
in ``challenges_redrawn_to_fit_footage``). The plan itself is never edited: every session runs
``liveness_plan`` of the challenge actually presented. Enrolment is the person's own neutral
frames.

Attacks, each its own presentation-attack-instrument species:

* ``still_photo``: an LFW photo held still in front of the camera (sensor noise only);
* ``moving_photo``: the same with hand tremor (smooth in-plane shift, rotation, scale);
* ``rotated_photo``: a best-effort attacker who answers each prompt by tilting the flat print
  in 3-D (a perspective warp timed to the prompts, as the performer times its clips);
* ``replay``: a recorded genuine session (frames and timestamps) played against a fresh
  challenge;
* ``identity_mismatch``: another person's genuine footage answering the plan correctly;
* ``face_swap``: the enrolled person for the first prompts, another person for the rest;
* ``screen_replay``: a recorded genuine session shown on a phone screen and filmed again
  (simulated: :mod:`.screen`), against a fresh challenge;
* ``steered_screen_replay``: the attacker holds the enrolled person's recorded clips on a
  screen and plays, for each prompt as it is shown, the clip that answers it (the
  "live-steered replay"): the genuine performer's frames, each through the simulated screen.

With ``recaptures`` (``--recaptures`` / ``$DEVICEBIO_RECAPTURES``: real third-party
recaptures, docs/data-recaptures.md), each real item is also shown to the product's
presentation-attack detectors as a session's frames (:mod:`.recaptures`, reported apart with
the number of people, screens and sources): real recaptures carry no prompt annotation, so
they stand for a steered replay whose active part succeeded, the attacker's best case.

The liveness check is the product's own: ``ActiveLiveness`` with its default detectors (the
passive PAD when its models are installed), or as ``pad`` says.

A presentation is accepted when the liveness result passed AND the faces it sampled match
the enrolled templates by :func:`devicebio.decision.decide` at the model's default operating
point: the decision :class:`~devicebio.authenticator.Authenticator` makes on a liveness session
(identity continuity between the samples is the liveness check's own job, by the same
threshold). For photo attacks the enrolled template is the photo's own
embedding, i.e. the strongest attacker, one who holds a photo of the enrolled user.

Metrics: APCER per species = accepted attacks / attack presentations of that species (in
``apcer``; ``apcer_ci`` counts what the liveness check alone passed), IAPMR (``iapmr_ci``) =
attacks the whole decision accepted (liveness passed AND the enrolled face matched); BPCER =
refused genuine sessions / genuine sessions; intervals exact 95% (Clopper-Pearson).

The package, one concern a module: :mod:`.annotation` (the segment file), :mod:`.footage`
(decoded frames and the per-frame memo), :mod:`.performers` (simulated users), :mod:`.attacks`
(rendered photo attacks), :mod:`.runner` (presentations, the process pool, :func:`evaluate`)
and :mod:`.report` (the tally and the table).
"""

from __future__ import annotations

from pathlib import Path

from devicebio.evaluation.liveness.annotation import (
    ENV_VIDEO,
    LABELS,
    PROMPT_LABELS,
    SEGMENTS_FILE,
    Annotation,
    Segment,
    check_annotation,
    load_annotation,
)
from devicebio.evaluation.liveness.attacks import SPECIES, PhotoAttack
from devicebio.evaluation.liveness.footage import FrameCache, RememberingLiveness
from devicebio.evaluation.liveness.performers import (
    Clip,
    Performer,
    Person,
    build_people,
    horizon,
)
from devicebio.evaluation.liveness.recaptures import ENV_RECAPTURES, recapture_dir
from devicebio.evaluation.liveness.report import format_table
from devicebio.evaluation.liveness.runner import evaluate


def default_video_dir() -> Path:
    from devicebio.evaluation import shared_data

    return shared_data("video", ENV_VIDEO)


__all__ = [
    "ENV_RECAPTURES",
    "ENV_VIDEO",
    "LABELS",
    "PROMPT_LABELS",
    "SEGMENTS_FILE",
    "SPECIES",
    "Annotation",
    "Clip",
    "FrameCache",
    "Performer",
    "Person",
    "PhotoAttack",
    "RememberingLiveness",
    "Segment",
    "build_people",
    "check_annotation",
    "default_video_dir",
    "evaluate",
    "format_table",
    "horizon",
    "load_annotation",
    "recapture_dir",
]
