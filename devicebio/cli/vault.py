"""Commands that set up a device profile: the vault, its PIN, its recovery codes."""

from __future__ import annotations

import argparse
from typing import Any

from devicebio.cli.common import (
    add_command,
    emit,
    key_provider,
    open_vault,
    read_secret,
    require_pin_if_set,
    vault_args,
)
from devicebio.cli.exits import EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from devicebio.store.vault import Vault

    vault = Vault.create(args.vault, key_provider(args, confirm=True))
    emit(args, {"ok": True, "vault": str(vault.path)}, f"created vault {vault.path}")
    return EXIT_OK


def cmd_pin_set(args: argparse.Namespace) -> int:
    from devicebio.fallback import Pin

    vault = open_vault(args)
    pin = Pin(vault)
    if pin.status().is_set:
        # Changing a PIN needs the old one: a thief with the unlocked vault must not reset it.
        pin.verify(read_secret("current PIN: "))
    pin.set(read_secret("new PIN: "))
    emit(args, {"ok": True}, "PIN set")
    return EXIT_OK


def cmd_recovery_new(args: argparse.Namespace) -> int:
    from devicebio.fallback import RecoveryCodes

    vault = open_vault(args)
    require_pin_if_set(vault)
    codes = RecoveryCodes(vault).new()
    emit(
        args,
        {"ok": True, "codes": codes},
        "recovery codes (each works once; store them offline, they are shown only now):\n"
        + "\n".join(f"  {c}" for c in codes),
    )
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = add_command(sub, "init", cmd_init, "create a vault")
    vault_args(p)
    p.add_argument(
        "--kdf",
        choices=["moderate", "interactive"],
        default="moderate",
        help="Argon2id cost for the passphrase (default moderate: 256 MiB)",
    )

    pin = sub.add_parser("pin", help="the device PIN").add_subparsers(dest="pin", required=True)
    vault_args(add_command(pin, "set", cmd_pin_set, "set or change the PIN (read from stdin)"))

    rc = sub.add_parser("recovery-codes", help="one-time recovery codes")
    rc_sub = rc.add_subparsers(dest="rc", required=True)
    vault_args(add_command(rc_sub, "new", cmd_recovery_new, "replace all recovery codes"))
