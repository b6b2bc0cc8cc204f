"""The parser, assembled from the command families, and the exit-code contract."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import cbor2

from verifier.errors import Reason, VerifierError

from . import ceremonies, inspect, revocation, serve
from ._common import (
    EPILOG,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STORAGE,
    EXIT_USAGE,
    Command,
    UsageError,
    fail,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verifier",
        description="Relying-party side of devicebio: challenges, registration, assertion "
        "verification and revocation lists, on one SQLite database.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str,
        func: Command,
        help_: str,
        *,
        db: bool = True,
        json_flag: bool = True,
        where: Any = None,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = (where or sub).add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        if db:
            p.add_argument(
                "--db",
                required=True,
                help="the store: a SQLite file, sqlite:///path or postgresql://...",
            )
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    ceremonies.register_commands(command)
    revocation.register_commands(command, sub)
    serve.register_commands(command)
    inspect.register_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; keep Python quiet.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except UsageError as exc:
        return fail(args, EXIT_USAGE, "usage", str(exc))
    except VerifierError as exc:
        message = str(exc).removeprefix(f"{exc.reason.value}: ")
        if exc.reason is Reason.STORAGE:
            return fail(args, EXIT_STORAGE, exc.reason.value, message)
        return fail(args, EXIT_REFUSED, exc.reason.value, message)
    except OSError as exc:
        return fail(args, EXIT_STORAGE, "io", f"{exc.strerror or exc}: {exc.filename or ''}")
    except cbor2.CBORError as exc:  # defensive: parsers should have wrapped it already
        return fail(args, EXIT_REFUSED, Reason.MALFORMED.value, type(exc).__name__)
