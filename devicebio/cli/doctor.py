"""``devicebio doctor``: models, their pins, onnxruntime, and the vault's permissions and state."""

from __future__ import annotations

import argparse
import os
from typing import Any

from devicebio.cli.common import (
    add_command,
    emit,
    open_vault,
)
from devicebio.cli.exits import EXIT_ENV, EXIT_OK
from devicebio.errors import DeviceBioError


def cmd_doctor(args: argparse.Namespace) -> int:
    import stat as stat_mod
    from pathlib import Path

    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    try:
        import onnxruntime

        check(
            "onnxruntime",
            True,
            f"{onnxruntime.__version__}, providers "
            f"{', '.join(onnxruntime.get_available_providers())}",
        )
    except ImportError:
        check("onnxruntime", False, "not installed: pip install 'devicebio[device]'")
    try:
        from devicebio.vision import models

        for name in models.MODELS:
            status = models.model_status(name)
            detail = {
                "ok": "matches its pinned sha256",
                "missing": "not built yet (builds on first use, offline)",
                "hash_mismatch": "DIFFERS from its pin: refused; devicebio models build --force",
            }[status]
            check(f"model {name}", status != "hash_mismatch", f"{detail} ({models.model_dir()})")
    except DeviceBioError as exc:
        check("models", False, str(exc))
    if args.vault:
        root = Path(args.vault)
        if root.is_dir():
            mode = stat_mod.S_IMODE(root.stat().st_mode)
            check("vault permissions", mode & 0o077 == 0, f"{root} mode {mode:o}")
            loose = [
                p
                for p in root.rglob("*")
                if p.is_file() and stat_mod.S_IMODE(p.stat().st_mode) & 0o077
            ]
            check("vault files private", not loose, f"{len(loose)} files readable by others")
            try:
                # Read-only, and without the Authenticator: doctor must run (and say what is
                # missing) where the [device] extra (numpy) is not installed.
                from devicebio.fallback import AttemptLimiter
                from devicebio.hazmat.credentials import Credentials

                vault = open_vault(args)
                creds = Credentials(vault).list()
                check(
                    "credentials",
                    True,
                    ", ".join(f"{c.rp_id}/{c.user} counter {c.sign_count}" for c in creds)
                    or "none",
                )
                st = AttemptLimiter(vault).status()
                check(
                    "face attempts", st.allowed, f"{st.state}, {st.consecutive_failures} failures"
                )
            except DeviceBioError as exc:
                check("vault opens", False, str(exc))
        else:
            check("vault", False, f"no vault at {root}")
    ok = all(c["ok"] for c in checks)
    human = "\n".join(
        f"{'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}" for c in checks
    )
    emit(args, {"ok": ok, "checks": checks}, human)
    return EXIT_OK if ok else EXIT_ENV


def add_parsers(sub: Any) -> None:
    p = add_command(
        sub, "doctor", cmd_doctor, "check models, hashes, onnxruntime, vault permissions"
    )
    p.add_argument("--vault", default=os.environ.get("DEVICEBIO_VAULT"))
    p.add_argument("--keyring", action="store_true")
    p.add_argument("--json", action="store_true")
