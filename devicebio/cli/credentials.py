"""``devicebio credentials``: the WebAuthn credentials on this device (never key material)."""

from __future__ import annotations

import argparse
from typing import Any

from devicebio.cli.common import (
    add_command,
    emit,
    open_vault,
    vault_args,
)
from devicebio.cli.exits import EXIT_OK


def cmd_credentials(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Authenticator
    from devicebio.protocol import b64url_encode

    rows = [
        {
            "rp_id": c.rp_id,
            "user": c.user,
            "credential_id": b64url_encode(c.credential_id),
            "sign_count": c.sign_count,
            "created_at": c.created_at,
        }
        for c in Authenticator(open_vault(args)).credentials()
    ]
    human = "\n".join(f"{r['rp_id']}\t{r['user']}\t{r['sign_count']}" for r in rows)
    emit(args, {"credentials": rows}, human or "no credentials")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    vault_args(
        add_command(sub, "credentials", cmd_credentials, "list credentials (no key material)")
    )
