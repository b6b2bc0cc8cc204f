"""``keygen``, ``revoke`` and ``revocation show|publish|install``: the RP's revocation list.

``revoke`` and ``revocation publish`` go through :func:`verifier.revocation.issue.publish`,
the same publisher the HTTP service uses: a duplicate entry is a no-op (exit 0, "already
revoked"), and a lost race with another publisher is retried on top of its list.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nacl.signing

from devicebio.protocol import atomic_write
from verifier import keys
from verifier.revocation import (
    RevocationEntry,
    RevocationReason,
    install_revocation_list,
    parse_revocation_list,
)
from verifier.revocation.codec import decode_unverified
from verifier.revocation.issue import DEFAULT_ISSUER, entry_from_text, publish
from verifier.revocation.mark import SerialMark
from verifier.views import revocation_list_to_json, utc

from ._common import (
    EXIT_OK,
    AddCommand,
    UsageError,
    emit,
    guarded,
    open_store,
    read_input,
    serial_mark_arg,
    signing_key_arg,
    usage_on_malformed,
    verify_key_arg,
)

_MAX_DAYS = 3650


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = nacl.signing.SigningKey.generate()
    out = Path(args.out)
    with usage_on_malformed():
        keys.write_signing_key(out, key, overwrite=args.force)
    if args.public_out:
        keys.write_public_key(args.public_out, key.verify_key)
    public = keys.public_jwk(key.verify_key)["x"]
    emit(args, {"public_key": public, "key_file": str(out)}, public)
    return EXIT_OK


def _entry(args: argparse.Namespace, now: int) -> RevocationEntry:
    for target in ("credential_id", "device_id", "model_id", "sdk_version"):
        value = getattr(args, target)
        if value is not None:
            with usage_on_malformed():
                return entry_from_text(target, value, args.reason, revoked_at=now)
    raise UsageError("name one of --credential-id, --device-id, --model-id, --sdk-version")


def _publish(args: argparse.Namespace, entry: RevocationEntry | None) -> int:
    """Sign and install the next list: the one in force plus ``entry`` (or just re-signed, so
    relying parties never see it go stale)."""
    if not 0 < args.next_update_days <= _MAX_DAYS:
        raise UsageError(f"--next-update-days must be in (0, {_MAX_DAYS}]")
    key = signing_key_arg(args.key)
    mark = SerialMark.beside_key(args.key, key.verify_key)
    with open_store(args) as store:
        if getattr(args, "adopt_mark", False) and mark.adopt(store.get_revocation_state()):
            store.audit("revocation_serial_mark_adopted")
        done = publish(
            store,
            key,
            entry,
            validity=args.next_update_days * 86_400,
            issuer=args.issuer,
            mark=mark,
        )
    rl = done.list
    if args.out:
        atomic_write(Path(args.out), done.data, mode=0o644)
    if done.changed:
        text = (
            f"revocation list serial {rl.serial} installed: {len(rl.entries)} entries, "
            f"next update {utc(rl.next_update)}"
        )
    else:
        assert entry is not None
        old = next(e for e in rl.entries if e.kind is entry.kind and e.value == entry.value)
        text = (
            f"{entry.kind.value} already revoked ({old.reason.value}) in serial {rl.serial}; "
            "nothing changed"
        )
    emit(
        args,
        {"list": revocation_list_to_json(rl), "changed": done.changed, "written_to": args.out},
        text + (f", written to {args.out}" if args.out else ""),
    )
    return EXIT_OK


def _cmd_revoke(args: argparse.Namespace) -> int:
    return _publish(args, _entry(args, int(time.time())))


def _cmd_revocation_publish(args: argparse.Namespace) -> int:
    return _publish(args, None)


def _cmd_revocation_show(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        state = store.get_revocation_state()
    if state is None:
        emit(args, {"list": None}, "no revocation list installed")
        return EXIT_OK
    serial, data = state
    if args.issuer_key:
        rl = parse_revocation_list(data, verify_key_arg(args.issuer_key))
        signature = "valid"
    else:
        rl = decode_unverified(data)
        signature = "not checked (pass --issuer-key)"
    stale = time.time() > rl.next_update
    view = revocation_list_to_json(rl)
    lines = [
        f"issuer:       {rl.issuer}",
        f"serial:       {rl.serial} (highest seen {serial})",
        f"this update:  {view['this_update_utc']}",
        f"next update:  {view['next_update_utc']}"
        + ("  ** STALE: checks fail **" if stale else ""),
        f"signature:    {signature}",
        f"entries:      {len(rl.entries)}",
    ]
    lines += [
        f"  {e['kind']:<13} {e['value']}  {e['reason']}  {e['revoked_at_utc']}"
        for e in view["entries"]
    ]
    emit(
        args,
        {"list": view, "highest_serial": serial, "stale": stale, "signature": signature},
        "\n".join(lines),
    )
    return EXIT_OK


def _cmd_revocation_install(args: argparse.Namespace) -> int:
    data = read_input(args.file)
    key = verify_key_arg(args.issuer_key)
    with open_store(args) as store:
        rl = install_revocation_list(guarded(store, args, key), data, key)
    emit(
        args,
        {"list": revocation_list_to_json(rl)},
        f"revocation list serial {rl.serial} in force ({len(rl.entries)} entries)",
    )
    return EXIT_OK


def register_commands(
    command: AddCommand, sub: argparse._SubParsersAction[argparse.ArgumentParser]
) -> None:
    p = command(
        "keygen", _cmd_keygen, "create the revocation-list signing key (file 0600)", db=False
    )
    p.add_argument("--out", required=True, help="private key file (JWK)")
    p.add_argument("--public-out", help="also write the public key as a JWK here")
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")

    p = command("revoke", _cmd_revoke, "issue, sign and install the next revocation list")
    p.add_argument("--key", required=True, help="signing key file from `verifier keygen`")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--credential-id", help="base64url credential id (write --credential-id=VALUE)"
    )
    what.add_argument("--device-id", help="hex per-RP device id")
    what.add_argument("--model-id", help="model identifier")
    what.add_argument("--sdk-version", help="SDK version string")
    p.add_argument(
        "--reason",
        required=True,
        help="one of: " + ", ".join(r.value for r in RevocationReason),
    )
    p.add_argument(
        "--next-update-days",
        type=float,
        default=30.0,
        help="validity of the new list (default 30 days)",
    )
    p.add_argument("--issuer", help=f"issuer name (default: previous, else {DEFAULT_ISSUER!r})")
    p.add_argument("--out", help="also write the signed list to this file")

    rev = sub.add_parser("revocation", help="the revocation list in force")
    rev_sub = rev.add_subparsers(dest="revocation_command", required=True)
    p = command("show", _cmd_revocation_show, "show the list in force", where=rev_sub)
    p.add_argument("--issuer-key", help="public key to check the signature with")
    p = command(
        "publish",
        _cmd_revocation_publish,
        "sign and install the next list with the same entries (the first, empty list; or a "
        "renewal before next_update)",
        where=rev_sub,
    )
    p.add_argument("--key", required=True, help="signing key file from `verifier keygen`")
    p.add_argument("--next-update-days", type=float, default=30.0, help="validity (default 30)")
    p.add_argument("--issuer", help=f"issuer name (default: previous, else {DEFAULT_ISSUER!r})")
    p.add_argument("--out", help="also write the signed list to this file")
    p.add_argument(
        "--adopt-mark",
        action="store_true",
        help="a key from before serial marks: make KEY.serial from the list in force",
    )
    p = command("install", _cmd_revocation_install, "install a signed list", where=rev_sub)
    p.add_argument("--issuer-key", required=True, help="public key of the list's issuer")
    serial_mark_arg(p)
    p.add_argument("file", nargs="?", help="signed list (default: stdin)")
