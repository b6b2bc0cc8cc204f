"""The one face decision: probes x templates x policy -> verdict.

Every place that decides whether faces belong to the same person calls this module:
authentication (:class:`devicebio.authenticator.Authenticator`), enrolment's consistency check,
the liveness check's identity continuity, ``devicebio test``, and every evaluation
(``devicebio eval lfw``, ``eval transactions``, ``eval liveness``). So the figures the docs
publish are figures of the rule the product runs.

The rule. Embeddings are unit-length 128-D vectors compared by Euclidean distance (LOWER means
more alike). A transaction's probes (the m frames of one attempt) are fused at score level:
each probe's distance to its closest enrolment template, averaged over the probes. The verdict
is ACCEPT when that fused distance is below the policy's threshold, so a LOWER threshold is
STRICTER. Averaging keeps one lucky frame from deciding, and taking each frame's closest
template lets enrolment cover several poses.

Consistency (enrolment) and continuity (liveness) ask a narrower question: are these single
captures of one person? Every pair must be closer than the policy's ``same_person`` threshold.
One frame against one frame is far noisier than a fused transaction (on LFW, the transaction
threshold would refuse 23% of same-person photo pairs), so that threshold sits at a
per-comparison point; tying it to the transaction threshold refused 42% of LFW enrolments.

Both thresholds come from the embedder's spec (:attr:`devicebio.vision.models.ModelSpec.
operating_points`), which carries the figures they were measured at; custom ones can be set.

Privacy: the fused distance never leaves this module through the public API. It is not
returned, printed, logged or put in an exception; callers get a :class:`Verdict`.
:func:`fused_distances` (not exported) gives the evaluation tools the scores they need to sweep
thresholds; they keep them in memory and write only aggregates.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from devicebio.errors import DeviceBioError, Reason

__all__ = ["EMBEDDER", "Policy", "Verdict", "consistent", "continues", "decide"]

EMBEDDER = "dlib_resnet_v1"  # the model whose spec carries the operating points


class Verdict(enum.StrEnum):
    ACCEPT = "accept"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Policy:
    """The thresholds a decision uses (accept below them; LOWER is STRICTER): ``threshold``
    for a transaction (:func:`decide`), ``same_person`` for two single captures
    (:func:`consistent`, :func:`continues`); and the name of the embedder's operating point
    they came from (None when the transaction threshold is custom)."""

    threshold: float
    same_person: float
    operating_point: str | None = None

    def __post_init__(self) -> None:
        for value in (self.threshold, self.same_person):
            # Unit vectors are at most 2 apart: a threshold above 2 would accept anyone.
            if not (isinstance(value, int | float) and math.isfinite(value)):
                raise DeviceBioError(Reason.INVALID_ARGUMENT, "threshold must be a finite number")
            if not 0.0 < value <= 2.0:
                raise DeviceBioError(Reason.INVALID_ARGUMENT, "threshold must be in (0, 2]")

    @classmethod
    def of(
        cls,
        *,
        threshold: float | None = None,
        operating_point: str | None = None,
        same_person: float | None = None,
        model: str = EMBEDDER,
    ) -> Policy:
        """The model's named ``operating_point`` (None: its default), with a custom
        transaction ``threshold`` or ``same_person`` threshold in place of its own."""
        if threshold is not None and operating_point is not None:
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT, "set a threshold or an operating point, not both"
            )
        from devicebio.vision.models import MODELS

        try:
            spec = MODELS[model]
        except KeyError:
            raise DeviceBioError(Reason.MODEL_MISSING, f"unknown model {model!r}") from None
        point = spec.operating_point(operating_point)
        return cls(
            point.threshold if threshold is None else float(threshold),
            point.same_person if same_person is None else float(same_person),
            point.name if threshold is None else None,
        )


def decide(probes: np.ndarray, templates: np.ndarray, policy: Policy) -> Verdict:
    """The verdict for one transaction: ``probes`` (m, 128) or (128,) embeddings of the
    attempt, ``templates`` (k, 128) of the claimed user (both in the same protected space)."""
    p, t = _rows(probes, "probes"), _rows(templates, "templates")
    if len(p) == 0 or len(t) == 0:
        return Verdict.REFUSE  # nothing to compare: fail closed
    if p.shape[1] != t.shape[1]:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "probes and templates differ in size")
    fused = float(fused_distances(p[None], t[None])[0, 0])
    return Verdict.ACCEPT if fused < policy.threshold else Verdict.REFUSE


def consistent(embeddings: np.ndarray, policy: Policy) -> bool:
    """Enrolment: do all these captures show one person (every pair closer than the
    threshold)? A person swapped in during capture is refused."""
    e = _rows(embeddings, "embeddings")
    return bool(np.all(_distances(e, e) < policy.same_person))


def continues(embedding: np.ndarray, earlier: np.ndarray, policy: Policy) -> bool:
    """Liveness: is ``embedding`` the same person as every earlier sample of the session?"""
    e, before = _rows(embedding, "embedding"), _rows(earlier, "earlier")
    if len(before) == 0:
        return True
    return bool(np.all(_distances(e, before) < policy.same_person))


def fused_distances(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """For evaluation tools only: the fused distance of every probe set against every
    template set, (P, m, D) x (T, k, D) -> (P, T). Scores are biometric data: keep them in
    memory, write only aggregates. :func:`decide` is this with P = T = 1."""
    p = np.asarray(probes, np.float64)
    t = np.asarray(templates, np.float64)
    if p.ndim != 3 or t.ndim != 3 or p.shape[2] != t.shape[2]:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "expected (P, m, D) and (T, k, D)")
    n_p, m, dim = p.shape
    n_t, k, _ = t.shape
    d = _distances(p.reshape(n_p * m, dim), t.reshape(n_t * k, dim)).reshape(n_p, m, n_t, k)
    return _fuse(d.transpose(0, 2, 1, 3))


def paired_fused_distances(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """For evaluation tools only: probe set i against template set i, (N, m, D) x (N, k, D)
    -> (N,); the same rule as :func:`fused_distances` (one photo against one photo when
    m = k = 1, as LFW's pairs are)."""
    p = np.asarray(probes, np.float64)
    t = np.asarray(templates, np.float64)
    if p.ndim != 3 or t.ndim != 3 or p.shape[0] != t.shape[0] or p.shape[2] != t.shape[2]:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "expected (N, m, D) and (N, k, D)")
    sq = (
        (p * p).sum(2)[:, :, None]
        + (t * t).sum(2)[:, None, :]
        - 2.0 * np.einsum("nmd,nkd->nmk", p, t)
    )
    return _fuse(np.sqrt(np.maximum(sq, 0.0)))


def _fuse(d: np.ndarray) -> np.ndarray:
    """THE rule: ``d[..., m, k]`` probe-to-template distances -> each probe's closest
    template, averaged over the probes."""
    return d.min(axis=-1).mean(axis=-1)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and of ``b`` (float64, so the Gram form
    loses nothing against the float32 embeddings)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _rows(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.size == 0:
        return np.zeros((0, 0), np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or not np.all(np.isfinite(a)):
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"{what} must be finite rows")
    return a
