"""``devicebio``: the device command line, one module per command family.

Families: :mod:`~devicebio.cli.vault` (init, pin, recovery-codes), :mod:`~devicebio.cli.face`
(register, authenticate, enroll, users, remove, renew, test), :mod:`~devicebio.cli.pay`,
:mod:`~devicebio.cli.doctor`,
:mod:`~devicebio.cli.credentials`, :mod:`~devicebio.cli.models`, :mod:`~devicebio.cli.eval`.
All share the exit-code contract of :mod:`~devicebio.cli.exits` and the secret handling of
:mod:`~devicebio.cli.common`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from devicebio.cli import credentials, doctor, face, models, pay, vault
from devicebio.cli import eval as eval_commands
from devicebio.cli.exits import EPILOG, exit_code_for
from devicebio.errors import DeviceBioError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devicebio",
        description="On-device face authentication that speaks WebAuthn.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (vault, face, pay, doctor, credentials, models, eval_commands):
        family.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DeviceBioError as exc:
        code = exit_code_for(exc.reason)
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "reason": exc.reason.value, "message": str(exc)}))
        else:
            print(f"devicebio: {exc}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
