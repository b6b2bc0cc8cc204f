"""What every ``verifier`` command shares: the exit-code contract, output, input and the
store. A command raises :class:`UsageError` (exit 2) or lets ``VerifierError`` through
(exit 1, or 3 for ``STORAGE``); :func:`verifier.cli.main` turns either into the answer."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import nacl.signing

from verifier import keys
from verifier.errors import Reason, VerifierError
from verifier.revocation.mark import SerialMark
from verifier.store import Store
from verifier.store import open_store as _open_store_url

if TYPE_CHECKING:  # the PostgreSQL driver is an optional extra
    from verifier.store import PostgresStore, SQLiteStore
from verifier.views import b64url_text

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STORAGE = 3

EPILOG = """\
exit codes:
  0  ok
  1  refused by the verifier; prints "refused: <reason>" (with --json:
     {"ok": false, "reason": "<reason>", "message": "..."})
  2  usage error (bad arguments, unreadable key material, nothing to do)
  3  storage or I/O error (database unusable, file unreadable or unwritable)
"""

# base64url may begin with "-", which argparse would take for an option.
CHALLENGE_HELP = "as printed by `verifier challenge`; write --challenge=VALUE"


class UsageError(Exception):
    """A mistake on the command line; exit code 2."""


Command = Callable[[argparse.Namespace], int]


class AddCommand(Protocol):
    """The parser helper each command family registers its commands with."""

    def __call__(
        self,
        name: str,
        func: Command,
        help_: str,
        *,
        db: bool = True,
        json_flag: bool = True,
        where: Any = None,
    ) -> argparse.ArgumentParser: ...


@contextlib.contextmanager
def usage_on_malformed() -> Iterator[None]:
    """What the operator typed (an id, a key file) is malformed: that is their mistake to
    fix (exit 2), not a refusal by the verifier."""
    try:
        yield
    except VerifierError as exc:
        if exc.reason is not Reason.MALFORMED:
            raise
        raise UsageError(str(exc).removeprefix(f"{exc.reason.value}: ")) from None


def b64url_arg(text: str, what: str) -> bytes:
    """Lenient on padding and surrounding space (people paste from many tools)."""
    with usage_on_malformed():
        return b64url_text(text.strip(), what)


def signing_key_arg(path: str) -> nacl.signing.SigningKey:
    with usage_on_malformed():
        return keys.load_signing_key(path)


def verify_key_arg(path: str) -> nacl.signing.VerifyKey:
    with usage_on_malformed():
        return keys.load_verify_key(path)


def emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"ok": True, **obj}, indent=2, sort_keys=True))
    else:
        print(text)


def fail(args: argparse.Namespace | None, code: int, reason: str, message: str) -> int:
    if args is not None and getattr(args, "json", False):
        print(json.dumps({"ok": False, "reason": reason, "message": message}, sort_keys=True))
    elif code == EXIT_REFUSED:
        print(f"refused: {reason} ({message})", file=sys.stderr)
    else:
        print(f"verifier: {reason}: {message}", file=sys.stderr)
    return code


#: The largest input a command reads: room for the largest revocation list (16 MiB,
#: ``MAX_LIST_BYTES``) as base64url text; credential JSON is capped at 64 KiB anyway. A FIFO,
#: /dev/zero or a huge sparse file is refused at this bound instead of read into memory whole.
MAX_INPUT = 24 * 1024 * 1024


def read_input(path: str | None) -> bytes:
    """The input file (``-`` or ``None``: stdin), at most :data:`MAX_INPUT` bytes; more is
    ``VerifierError(MALFORMED)``, an unreadable path is ``OSError`` (exit 3)."""
    if path is None or path == "-":
        data = sys.stdin.buffer.read(MAX_INPUT + 1)
    else:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        raise VerifierError(Reason.MALFORMED, f"input larger than {MAX_INPUT} bytes")
    return data


@contextlib.contextmanager
def open_store(args: argparse.Namespace) -> Iterator[SQLiteStore | PostgresStore]:
    """``--db``: ``postgresql://...``, ``sqlite:///path`` or a plain SQLite path."""
    store = _open_store_url(args.db)
    try:
        yield store
    finally:
        store.close()


def serial_mark_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--serial-mark",
        metavar="FILE",
        help="this RP's revocation serial mark, kept OUTSIDE the database and its backups: "
        "a restored database can then not bring back an older list",
    )


def guarded(store: Store, args: argparse.Namespace, key: nacl.signing.VerifyKey | None) -> Store:
    """``store`` held to ``--serial-mark`` when the command was given one (and a key)."""
    path = getattr(args, "serial_mark", None)
    if path is None or key is None:
        return store
    return SerialMark(path, key).guard(store)
