"""What every command family shares: secrets, the vault, output, and the common arguments.

Secrets (passphrase, PIN, recovery code) are never taken as arguments, which other users can
read in the process list: the passphrase comes from ``DEVICEBIO_PASSPHRASE`` or a prompt, a
PIN or recovery code from standard input or a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from devicebio.cli.exits import EPILOG
from devicebio.errors import DeviceBioError, Reason

Command = Callable[[argparse.Namespace], int]


def add_command(parent: Any, name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
    """A sub-command whose help ends with the exit-code contract."""
    p = parent.add_parser(
        name, help=help_, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.set_defaults(func=fn)
    return p


# ---- secrets ----------------------------------------------------------------------------


def read_secret(prompt: str) -> str:
    """One line from stdin, or a no-echo prompt when stdin is a terminal."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    if not line:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"expected {prompt.strip(': ')} on stdin")
    return line.rstrip("\r\n")


def key_provider(args: argparse.Namespace, *, confirm: bool = False) -> Any:
    from devicebio.store.vault import KeyringKey, PassphraseKey

    if getattr(args, "keyring", False):
        return KeyringKey()
    strength = getattr(args, "kdf", "moderate")
    passphrase = os.environ.get("DEVICEBIO_PASSPHRASE")
    if passphrase is None:
        if not sys.stdin.isatty():
            raise DeviceBioError(
                Reason.INVALID_ARGUMENT,
                "no passphrase: set DEVICEBIO_PASSPHRASE or run in a terminal",
            )
        passphrase = getpass.getpass("vault passphrase: ")
        if confirm and getpass.getpass("again: ") != passphrase:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "the passphrases differ")
    return PassphraseKey(passphrase, strength)


def open_vault(args: argparse.Namespace) -> Any:
    from devicebio.store.vault import Vault

    return Vault.open(args.vault, key_provider(args))


def challenge_bytes(text: str) -> bytes:
    from devicebio.protocol import b64url_decode

    return b64url_decode(text)


def require_pin_if_set(vault: Any) -> None:
    """Changing who the face unlocks needs the knowledge factor: a thief holding the unlocked
    device must not enrol their own face."""
    from devicebio.fallback import Pin

    if Pin(vault).status().is_set:
        Pin(vault).verify(read_secret("PIN: "))


# ---- output -----------------------------------------------------------------------------


def emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        print(human)


# ---- arguments --------------------------------------------------------------------------


def vault_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vault",
        default=os.environ.get("DEVICEBIO_VAULT"),
        required="DEVICEBIO_VAULT" not in os.environ,
        help="vault directory (default: $DEVICEBIO_VAULT)",
    )
    p.add_argument("--keyring", action="store_true", help="the vault key is in the OS keyring")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def rp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rp-id", required=True, help="relying party id, e.g. example.com")
    p.add_argument("--origin", required=True, help="origin, e.g. https://example.com")
    p.add_argument(
        "--challenge", required=True, help="the RP's challenge, base64url (write --challenge=VALUE)"
    )
