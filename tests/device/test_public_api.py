"""The top-level API: lazy, small, and the right way round (the ceremony at the top, the
primitive that signs any claimed verification only in hazmat)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import devicebio

REPO = Path(__file__).resolve().parents[2]


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    return json.loads(out)


def test_importing_devicebio_loads_no_submodule_and_nothing_heavy() -> None:
    loaded = _loaded_after("import devicebio")
    assert [m for m in loaded if m.startswith("devicebio.")] == []
    assert not {"numpy", "cv2", "onnxruntime", "nacl", "fido2"} & set(loaded)


def test_a_name_loads_only_what_it_needs() -> None:
    loaded = _loaded_after("from devicebio import Pin")
    assert "devicebio.fallback.knowledge" in loaded
    assert not {"numpy", "cv2", "onnxruntime"} & set(loaded)
    assert not [m for m in loaded if m.startswith(("devicebio.vision", "devicebio.liveness"))]


def test_every_export_resolves() -> None:
    import pytest

    pytest.importorskip("numpy", reason="the face exports need the [device] extra")
    for name in devicebio.__all__:
        assert getattr(devicebio, name) is not None, name
    assert set(devicebio.__all__) == set(devicebio._EXPORTS)
    assert set(devicebio.__all__) <= set(dir(devicebio))


def test_hazmat_is_not_at_the_top() -> None:
    for name in ("Credentials", "UserVerification", "AttemptLimiter", "seal", "atomic_write"):
        assert name not in devicebio.__all__
        assert not hasattr(devicebio, name), name
    for name in ("Authenticator", "Consent", "AuthPolicy", "Outcome", "OutcomeCode", "Vault"):
        assert name in devicebio.__all__
