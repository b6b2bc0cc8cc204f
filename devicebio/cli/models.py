"""``devicebio models``: build the face models offline from installed packages, verify their
pins, list them."""

from __future__ import annotations

import argparse
from typing import Any

from devicebio.cli.common import (
    add_command,
    emit,
)
from devicebio.cli.exits import EXIT_ENV, EXIT_OK


def cmd_models_build(args: argparse.Namespace) -> int:
    from devicebio.vision import models

    paths = models.build_models(
        cache_dir=args.cache_dir, force=args.force, progress=True, download=True
    )
    rows = [{"name": n, "path": str(p)} for n, p in zip(models.MODELS, paths, strict=True)]
    emit(args, {"ok": True, "models": rows}, "\n".join(f"built {r['path']}" for r in rows))
    return EXIT_OK


def cmd_models_verify(args: argparse.Namespace) -> int:
    from devicebio.vision import models

    rows = [
        {"name": n, "status": models.model_status(n, args.cache_dir), "sha256": s.sha256}
        for n, s in models.MODELS.items()
    ]
    ok = all(r["status"] == "ok" for r in rows)
    emit(
        args,
        {"ok": ok, "dir": str(models.model_dir(args.cache_dir)), "models": rows},
        "\n".join(f"{r['status']:>13}  {r['name']}" for r in rows),
    )
    return EXIT_OK if ok else EXIT_ENV


def cmd_models_list(args: argparse.Namespace) -> int:
    from devicebio.vision import models

    rows = [
        {
            "name": s.name,
            "model_id": s.model_id,
            "purpose": s.purpose,
            "licence": s.licence,
            "source": s.source_package,
            "sha256": s.sha256,
        }
        for s in models.MODELS.values()
    ]
    human = "\n".join(f"{r['model_id']:<40} {r['purpose']}  [{r['licence']}]" for r in rows)
    emit(args, {"models": rows, "dir": str(models.model_dir(args.cache_dir))}, human)
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    m = sub.add_parser("models", help="the face models: build, verify, list")
    m_sub = m.add_subparsers(dest="models", required=True)
    for name, fn, help_ in (
        ("build", cmd_models_build, "convert the models from pinned packages (once)"),
        ("verify", cmd_models_verify, "check every cached model against its pinned sha256"),
        ("list", cmd_models_list, "what each model is, its licence and its pin"),
    ):
        p = add_command(m_sub, name, fn, help_)
        p.add_argument(
            "--cache-dir", help="model cache (default: $DEVICEBIO_MODEL_DIR or user cache)"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild even if cached")
