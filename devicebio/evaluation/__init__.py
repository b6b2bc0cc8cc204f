"""Evaluation tools for reviewers: accuracy on face sets in LFW's format (``devicebio eval``)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data(kind: str, env: str) -> Path:
    """Where the shared test data lives: ``$env``, else ``../shared/data/<kind>`` beside the
    working directory (a checkout run from its root, as tox and the README do), else beside
    the source tree."""
    if os.environ.get(env):
        return Path(os.environ[env])
    beside_cwd = Path.cwd().parent / "shared" / "data" / kind
    if beside_cwd.is_dir():
        return beside_cwd
    return Path(__file__).resolve().parents[3] / "shared" / "data" / kind
