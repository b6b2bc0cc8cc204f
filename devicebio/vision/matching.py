"""Comparing embeddings, and the default decision threshold.

Distances are Euclidean between unit-length 128-D embeddings (the pipeline mirror-averages
dlib's embedding and normalises it); **lower means more alike**, and a face is accepted when
``distance < threshold``: a LOWER threshold is STRICTER (fewer false accepts, more false
rejects). dlib's own rule, 0.6, applies to its unnormalised embeddings, not to these. Our
default sits at a false-accept rate of about 1e-3 per comparison on LFW (see
docs/evaluation.md for the measured FAR/FRR).
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.40


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def best_distance(probe: np.ndarray, templates: np.ndarray) -> float:
    """The closest of several templates (rows) to the probe."""
    diffs = np.asarray(templates, np.float32) - np.asarray(probe, np.float32)[None]
    return float(np.min(np.linalg.norm(diffs, axis=1)))
