"""``challenge``, ``register``, ``verify``, ``purge`` and ``audit``: the ceremonies and the
store's housekeeping, on one database."""

from __future__ import annotations

import argparse
import json
import time

from devicebio.protocol import Method
from verifier.assertion import verify_assertion
from verifier.challenges import Purpose, issue_challenge
from verifier.policy import Policy
from verifier.registration import verify_registration
from verifier.views import assertion_json, challenge_json, registration_json, utc

from ._common import (
    CHALLENGE_HELP,
    EXIT_OK,
    AddCommand,
    UsageError,
    b64url_arg,
    emit,
    guarded,
    open_store,
    read_input,
    serial_mark_arg,
    verify_key_arg,
)

_MAX_TTL = 86_400.0


def policy_from_args(args: argparse.Namespace) -> Policy:
    """``--methods`` and ``--require-liveness`` as a Policy (also used by ``serve``)."""
    methods = frozenset(Method)
    if args.methods:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
        try:
            methods = frozenset(Method(m) for m in names)
        except ValueError as exc:
            choices = ",".join(m.value for m in Method)
            raise UsageError(f"--methods: unknown method; choose from {choices}") from exc
        if not methods:
            raise UsageError("--methods: name at least one method")
    return Policy(accepted_methods=methods, require_liveness=args.require_liveness)


def _cmd_challenge(args: argparse.Namespace) -> int:
    if not 0 < args.ttl <= _MAX_TTL:
        raise UsageError(f"--ttl must be in (0, {_MAX_TTL:.0f}] seconds")
    with open_store(args) as store:
        c = issue_challenge(store, user=args.user, purpose=Purpose(args.purpose), ttl=args.ttl)
    view = challenge_json(c)
    emit(args, view, view["challenge"])
    return EXIT_OK


def _cmd_register(args: argparse.Namespace) -> int:
    challenge = b64url_arg(args.challenge, "--challenge")
    user_handle = b64url_arg(args.user_handle, "--user-handle") if args.user_handle else None
    issuer_key = verify_key_arg(args.issuer_key) if args.issuer_key else None
    payload = read_input(args.file)
    with open_store(args) as store:
        result = verify_registration(
            credential=payload,
            expected_challenge=challenge,
            expected_origin=args.origin,
            expected_rp_id=args.rp_id,
            store=guarded(store, args, issuer_key),
            user=args.user,
            user_handle=user_handle,
            revocation_issuer_key=issuer_key,
        )
    view = registration_json(result)
    emit(
        args,
        view,
        f"registered credential {view['credential_id']} for {result.user} "
        f"({result.method.value}, assurance {result.assurance.value})",
    )
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    challenge = b64url_arg(args.challenge, "--challenge")
    policy = policy_from_args(args)
    issuer_key = verify_key_arg(args.issuer_key) if args.issuer_key else None
    payload = read_input(args.file)
    with open_store(args) as store:
        result = verify_assertion(
            credential=payload,
            expected_challenge=challenge,
            expected_origin=args.origin,
            expected_rp_id=args.rp_id,
            store=guarded(store, args, issuer_key),
            policy=policy,
            revocation_issuer_key=issuer_key,
        )
    emit(
        args,
        assertion_json(result, policy, revocation_checked=issuer_key is not None),
        f"verified: {result.user} by {result.method.value}, assurance "
        f"{result.assurance.value}, counter {result.new_sign_count}"
        + ("; re-enrolment required" if result.re_enrol_required else ""),
    )
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        removed = store.purge_expired_challenges(time.time())
    emit(args, {"removed": removed}, f"removed {removed} expired challenges")
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    if not 0 < args.limit <= 100_000:
        raise UsageError("--limit must be in 1..100000")
    with open_store(args) as store:
        events = store.audit_events(args.limit)
    rows = [{"time": t, "time_utc": utc(t), "event": e, "fields": f} for t, e, f in events]
    text = "\n".join(
        f"{r['time_utc']}  {r['event']:<28} {json.dumps(r['fields'], sort_keys=True)}" for r in rows
    )
    emit(args, {"events": rows}, text or "no audit events")
    return EXIT_OK


def register_commands(command: AddCommand) -> None:
    p = command("challenge", _cmd_challenge, "issue a single-use challenge (base64url)")
    p.add_argument("--user", required=True)
    p.add_argument("--purpose", required=True, choices=[x.value for x in Purpose])
    p.add_argument("--ttl", type=float, default=300.0, help="seconds (default 300)")

    p = command("register", _cmd_register, "verify a registration and store the credential")
    p.add_argument("--rp-id", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--challenge", required=True, help=CHALLENGE_HELP)
    p.add_argument("--user-handle", help="base64url user.id sent in the creation options")
    p.add_argument("--file", help="registration JSON (default: stdin)")
    p.add_argument("--issuer-key", help="revocation-list public key; enforces the list")
    serial_mark_arg(p)

    p = command("verify", _cmd_verify, "verify an assertion against a stored credential")
    p.add_argument("--rp-id", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--challenge", required=True, help=CHALLENGE_HELP)
    p.add_argument("--require-liveness", action="store_true")
    p.add_argument("--methods", help="accepted methods, comma-separated (face,pin,...)")
    p.add_argument("--issuer-key", help="revocation-list public key; enforces the list")
    serial_mark_arg(p)
    p.add_argument("--file", help="assertion JSON (default: stdin)")

    command("purge", _cmd_purge, "delete expired challenges")
    p = command("audit", _cmd_audit, "show the newest audit events")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")
