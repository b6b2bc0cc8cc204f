"""``serve``: the reference relying-party HTTP service, in the foreground.

The one place the command line reaches the server, and only when the command runs: the
server never imports the CLI, and ``import verifier.cli`` needs no Starlette.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Any

from ._common import EXIT_OK, AddCommand, UsageError, usage_on_malformed
from .ceremonies import policy_from_args


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from verifier.server import MAX_WORKERS, create_app, serve, serve_workers
    except ImportError:
        raise UsageError("the HTTP service needs: pip install 'devicebio[server]'") from None
    if not 1 <= args.workers <= MAX_WORKERS:
        raise UsageError(f"--workers must be 1..{MAX_WORKERS}")
    limits = _limits(args)
    factory = functools.partial(
        create_app,
        db=args.db,
        rp_id=args.rp_id,
        origin=args.origin,
        revocation_key_file=args.key,
        policy=policy_from_args(args),
        admin_token=os.environ.get("VERIFIER_ADMIN_TOKEN"),
        open_registration=args.open_registration,
        limits=limits,
        payment_policy=_payment_policy(args),
    )
    # Built here even for several workers: a bad key, store or option fails now, with its
    # exit code, and the first revocation list is published once, not raced by the workers.
    app = factory()

    def listening(url: str) -> None:
        print(json.dumps({"url": url}) if args.json else f"verifier serving on {url}", flush=True)

    if args.workers == 1:
        serve(app, host=args.host, port=args.port, on_listening=listening)
    else:
        app.state.store.close()
        serve_workers(
            factory, workers=args.workers, host=args.host, port=args.port, on_listening=listening
        )
    return EXIT_OK


#: serve's limit flags: (flag, type, help); unset ones keep Limits' defaults, so the CLI
#: cannot drift from the library (and building the parser needs no Starlette).
_LIMIT_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--header-timeout", float, "seconds for a request head"),
    ("--body-timeout", float, "seconds for a whole request body"),
    ("--limit-concurrency", int, "connections or running requests before 503"),
    ("--rate", float, "/challenge and /verify per second per client address"),
    ("--burst", int, "burst of those per address"),
    ("--max-open-challenges", int, "unused challenges one user may have"),
    ("--audit-days", float, "audit retention in days (0: keep forever)"),
)


def _limits(args: argparse.Namespace) -> Any:
    from verifier.server.http import Limits

    given = {
        flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"))
        for flag, _, _ in _LIMIT_FLAGS
    }
    kw = {k: v for k, v in given.items() if v is not None and k != "audit_days"}
    days = given["audit_days"]
    if days is not None:
        kw["audit_retention"] = None if days == 0 else days * 86_400.0
    with usage_on_malformed():
        return Limits(**kw)


#: serve's payment-policy flags: (flag, PaymentPolicy field); unset ones keep its defaults,
#: "none" means the method never pays (or, for the daily limit, no daily limit).
_PAY_FLAGS = (
    ("--pay-currency", "currency", "ISO 4217 currency of the till's limits"),
    ("--pay-face-limit", "face_with_liveness", "most a face with liveness approves"),
    ("--pay-pin-limit", "pin", "most a PIN approves"),
    ("--pay-key-limit", "security_key", "most a security key approves (the step-up)"),
    ("--pay-daily-limit", "daily_limit", "a user's 24-hour total without step-up"),
)


def _payment_policy(args: argparse.Namespace) -> Any:
    from verifier.payment import PaymentPolicy

    kw: dict[str, Any] = {}
    for flag, name, _ in _PAY_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            kw[name] = None if value == "none" and name != "currency" else value
    with usage_on_malformed():
        return PaymentPolicy(**kw)


def register_commands(command: AddCommand) -> None:
    p = command("serve", _cmd_serve, "the reference relying-party HTTP service (loopback)")
    p.add_argument("--rp-id", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--key", help="revocation-list signing key (enables /revoke, /revocation)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the one port (default 1); share --db safely: see"
        " docs/deployment.md",
    )
    p.add_argument("--methods", help="accepted methods, comma-separated (default: all)")
    p.add_argument("--require-liveness", action="store_true")
    p.add_argument(
        "--open-registration", action="store_true", help="anyone may register a new user"
    )
    limits = p.add_argument_group(
        "limits", "what one client may cost (defaults: verifier.server.http.Limits)"
    )
    for flag, kind, text in _LIMIT_FLAGS:
        limits.add_argument(flag, type=kind, help=text)
    payments = p.add_argument_group(
        "payments", "the till's payment policy (defaults: verifier.payment.PaymentPolicy)"
    )
    for flag, _, text in _PAY_FLAGS:
        payments.add_argument(flag, help=f"{text} (a decimal string, or none)")
