"""The relying-party shell's shape, checked: the verifier speaks to the device side only
through ``devicebio.protocol``, the server and the CLI do not import each other, and there is
one revocation publisher."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_DEVICE_MODULES = (
    "bad = sorted(m for m in sys.modules"
    " if m.startswith('devicebio.') and not m.startswith('devicebio.protocol'))\n"
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_verifier_and_cli_import_only_the_protocol() -> None:
    r = _python("import sys, verifier, verifier.cli\n" + _DEVICE_MODULES + "print(bad)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_server_imports_only_the_protocol_and_not_the_cli() -> None:
    if importlib.util.find_spec("starlette") is None:
        pytest.skip("the server needs the [server] extra")
    r = _python(
        "import sys, verifier, verifier.server\n"
        + _DEVICE_MODULES
        + "print(bad, 'verifier.cli' in sys.modules)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[] False"


def test_cli_imports_the_server_only_to_serve() -> None:
    r = _python(
        "import sys, verifier.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith(('verifier.server', 'starlette'))))\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _calls(name: str) -> list[str]:
    """Modules of the verifier package that call ``name``."""
    found = []
    for path in sorted((REPO / "verifier").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if called == name:
                    found.append(str(path.relative_to(REPO)))
                    break
    return found


def test_one_revocation_publisher() -> None:
    # Signing a list and installing what one signed happen in one place; everything else
    # (CLI, server, renewals) goes through publish().
    assert _calls("sign_revocation_list") == ["verifier/revocation/issue.py"]
    assert set(_calls("publish")) == {"verifier/cli/revocation.py", "verifier/revocation/issue.py"}
