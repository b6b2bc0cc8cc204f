"""Fixed challenges for tests (issue 10 #12): a test never draws a random challenge.

A challenge decides a liveness plan, so a random one makes the plan, and the outcome, random.
Tests put a fixed value into the RP's store the way ``issue_challenge`` would, with an expiry
no run reaches (an expiry from the wall clock fails a slow run).
"""

from __future__ import annotations

import hashlib
from typing import Any

FAR_FUTURE = 1e12


def fixed_challenge(store: Any, label: str, *, user: str, purpose: Any) -> bytes:
    """32 bytes named by ``label``, stored as an unused challenge for ``user`` and ``purpose``."""
    value = hashlib.sha256(b"devicebio/test-challenge\x00" + label.encode()).digest()
    store.insert_challenge(value, user, getattr(purpose, "value", purpose), FAR_FUTURE)
    return value
