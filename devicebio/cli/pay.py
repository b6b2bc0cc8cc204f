"""``devicebio pay``: approve a payment (Secure Payment Confirmation shape) by face or a
fallback. The transaction is printed before anything is captured or asked for; the signed
assertion carries exactly what was printed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from devicebio.cli.common import add_command, challenge_bytes, open_vault, rp_args, vault_args
from devicebio.cli.exits import EXIT_OK, EXIT_REFUSED
from devicebio.cli.face import _fallback_proof, face_session
from devicebio.errors import DeviceBioError, Reason, protocol_errors
from devicebio.fallback import Fallback


def _payment(args: argparse.Namespace) -> Any:
    from devicebio.protocol import Amount, Instrument, PaymentDetails

    with protocol_errors():  # a bad amount or origin is a usage error, before anything runs
        return PaymentDetails(
            rp_id=args.rp_id,
            top_origin=args.top_origin or args.origin,
            payee_name=args.payee,
            payee_origin=args.payee_origin,
            total=Amount(args.currency, args.amount),
            instrument=Instrument(args.instrument, args.icon),
        )


def _show(payment: Any) -> bool:
    # stderr: stdout carries only the signed result, so scripts can pipe it to the RP.
    print("payment to approve:", file=sys.stderr)
    for line in payment.lines():
        print(f"  {line}", file=sys.stderr)
    return True


def _print(args: argparse.Namespace, payment: Any, assertion: Any) -> int:
    if args.json:
        out = {"ok": True, "transaction": payment.to_json(), "credential": assertion.to_json()}
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(json.dumps(assertion.to_json(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_pay(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Authenticator

    payment = _payment(args)
    challenge = challenge_bytes(args.challenge)
    vault = open_vault(args)
    where = {"rp_id": args.rp_id, "origin": args.origin, "challenge": challenge}
    if args.method != "face":
        auth = Authenticator(vault)
        sign = {
            Fallback.PIN: auth.authorize_payment_with_pin,
            Fallback.SECURITY_KEY: auth.authorize_payment_with_security_key,
        }.get(args.method)
        if sign is None:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, f"{args.method!r} cannot pay")
        # Shown first, then the secret is asked for: the user knows what the PIN approves.
        # The Authenticator is handed the very object printed (it was shown: True).
        _show(payment)
        assertion = sign(
            _fallback_proof(args.method),
            payment=payment,
            on_transaction=lambda shown: shown is payment,
            **where,
        )
        return _print(args, payment, assertion)
    auth, source = face_session(args, vault)
    try:
        result = auth.authorize_payment(
            args.user, source, payment=payment, on_transaction=_show, **where
        )
    finally:
        source.close()
    if result.assertion is not None:
        return _print(args, payment, result.assertion)
    payload = {
        "ok": False,
        "outcome": result.outcome.code.value,
        "message": result.outcome.message,
        "fallbacks": [f for f in result.fallbacks if f != Fallback.RECOVERY],
    }
    if args.json:
        print(json.dumps(payload))
    else:
        print(f"devicebio: {result.outcome.message}; nothing was signed", file=sys.stderr)
    return EXIT_REFUSED


def add_parsers(sub: Any) -> None:
    p = add_command(sub, "pay", cmd_pay, "approve a payment (printed first) by face or PIN")
    vault_args(p)
    rp_args(p)
    p.add_argument("--payee", help="the payee's name, as shown (payeeName)")
    p.add_argument("--payee-origin", help="the payee's https origin (payeeOrigin)")
    p.add_argument("--amount", required=True, help="a decimal string, e.g. 2.50 (never a float)")
    p.add_argument("--currency", required=True, help="ISO 4217 code, e.g. EUR")
    p.add_argument("--instrument", default="devicebio", help="what pays (displayName)")
    p.add_argument(
        "--icon",
        default="data:image/png;base64,",
        help="the instrument's icon URL (https: or data:image/)",
    )
    p.add_argument("--top-origin", help="the page that asked (default: --origin)")
    p.add_argument(
        "--method",
        choices=["face", Fallback.PIN.value, Fallback.SECURITY_KEY.value],
        default="face",
        help="face (with --user and --source), a PIN from stdin, or a security key",
    )
    p.add_argument("--user", help="the enrolled user (face)")
    p.add_argument("--source", help="camera, camera:N, a video, a photo or a folder")
    p.add_argument(
        "--liveness",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="challenge-bound liveness prompts (default: on for a camera, off otherwise)",
    )
