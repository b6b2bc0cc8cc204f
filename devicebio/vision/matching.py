"""Comparing embeddings, and the default decision threshold.

Distances are Euclidean between 128-D embeddings; **lower means more alike**, and a face is
accepted when ``distance < threshold``: a LOWER threshold is STRICTER (fewer false accepts,
more false rejects). dlib's own rule is 0.6. Our default is chosen on LFW for a false-accept
rate near 1e-3 (see docs/evaluation.md for the measured FAR/FRR it gives).
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def best_distance(probe: np.ndarray, templates: np.ndarray) -> float:
    """The closest of several templates (rows) to the probe."""
    diffs = np.asarray(templates, np.float32) - np.asarray(probe, np.float32)[None]
    return float(np.min(np.linalg.norm(diffs, axis=1)))
