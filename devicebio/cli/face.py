"""Commands of the face ceremony: enrol, authenticate (face or a fallback), register with a
relying party, list, remove and re-key enrolments, and ``test`` (what the pipeline sees)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from devicebio.cli.common import (
    add_command,
    challenge_bytes,
    emit,
    open_vault,
    read_secret,
    require_pin_if_set,
    rp_args,
    vault_args,
)
from devicebio.cli.exits import EXIT_OK, EXIT_REFUSED
from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import Fallback


def _fallback_proof(method: str) -> Any:
    """What the user presents for a fallback: a PIN or recovery code from stdin, or the
    security key plugged in (python-fido2 finds it; the Authenticator checks it)."""
    if method == Fallback.PIN:
        return read_secret("PIN: ")
    if method == Fallback.RECOVERY:
        return read_secret("recovery code: ")
    if method == Fallback.SECURITY_KEY:
        from devicebio.fallback.security_key import find_security_keys

        keys = find_security_keys()
        if not keys:
            raise DeviceBioError(
                Reason.SECURITY_KEY_UNAVAILABLE,
                "no FIDO2 security key found",
                hint="plug in the key enrolled with this device, or use --method pin",
            )
        print("touch your security key", file=sys.stderr)
        return keys[0]
    raise DeviceBioError(Reason.INVALID_ARGUMENT, f"method {method!r} is not available here")


def cmd_register(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Authenticator

    auth = Authenticator(open_vault(args))
    register = {
        Fallback.PIN: auth.register_with_pin,
        Fallback.RECOVERY: auth.register_with_recovery_code,
    }.get(args.method)
    if register is None:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"method {args.method!r} cannot register")
    registration = register(
        _fallback_proof(args.method),
        user_name=args.user,
        rp_id=args.rp_id,
        origin=args.origin,
        challenge=challenge_bytes(args.challenge),
    )
    print(json.dumps(registration.to_json(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_authenticate(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Authenticator

    vault = open_vault(args)
    if args.method == "face":
        return authenticate_face(args, vault)
    auth = Authenticator(vault)
    sign = {
        Fallback.PIN: auth.authenticate_with_pin,
        Fallback.RECOVERY: auth.authenticate_with_recovery_code,
        Fallback.SECURITY_KEY: auth.authenticate_with_security_key,
    }.get(args.method)
    if sign is None:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"method {args.method!r} is not available")
    assertion = sign(
        _fallback_proof(args.method),
        rp_id=args.rp_id,
        origin=args.origin,
        challenge=challenge_bytes(args.challenge),
    )
    print(json.dumps(assertion.to_json(), indent=2, sort_keys=True))
    return EXIT_OK


PROMPT_TEXT = {
    "turn_left": "turn your head to YOUR left",
    "turn_right": "turn your head to YOUR right",
    "look_up": "look up",
    "blink": "blink",
}


def face_authenticator(vault: Any, args: argparse.Namespace, *, liveness: bool = False) -> Any:
    from devicebio.authenticator import Authenticator
    from devicebio.vision.pipeline import FacePipeline

    quiet = getattr(args, "json", False)

    def on_frame(outcome: Any) -> None:
        if not quiet and not liveness:
            print(f"  frame: {'ok' if outcome is None else outcome.message}", file=sys.stderr)

    def on_prompt(step: Any) -> None:
        # The prompt goes to the terminal at once: the response window is already running.
        print(f">>> {PROMPT_TEXT.get(step.prompt.value, step.prompt.value)}", file=sys.stderr)

    pipeline = FacePipeline(progress=not quiet)
    checker = None
    if liveness:
        from devicebio.liveness import ActiveLiveness

        checker = ActiveLiveness(pipeline)
        print("look at the camera, then follow the prompts", file=sys.stderr)
    return Authenticator(
        vault, pipeline=pipeline, on_frame=on_frame, liveness=checker, on_prompt=on_prompt
    )


def open_frames(args: argparse.Namespace) -> Any:
    from devicebio.sources import open_source

    return open_source(args.source)


def face_session(args: argparse.Namespace, vault: Any) -> tuple[Any, Any]:
    """The Authenticator and frame source of a face ceremony (sign-in or payment); liveness
    is on by default for a live camera."""
    if not args.user or not args.source:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "--method face needs --user and --source")
    if args.liveness is None:
        args.liveness = args.source == "camera" or args.source.startswith("camera:")
    return face_authenticator(vault, args, liveness=args.liveness), open_frames(args)


def authenticate_face(args: argparse.Namespace, vault: Any) -> int:
    auth, source = face_session(args, vault)
    try:
        result = auth.authenticate(
            args.user,
            source,
            rp_id=args.rp_id,
            origin=args.origin,
            challenge=challenge_bytes(args.challenge),
        )
    finally:
        source.close()
    if result.assertion is not None:
        print(json.dumps(result.assertion.to_json(), indent=2, sort_keys=True))
        return EXIT_OK
    payload = {
        "ok": False,
        "outcome": result.outcome.code.value,
        "message": result.outcome.message,
        "fallbacks": list(result.fallbacks),
    }
    if args.json:
        print(json.dumps(payload))
    else:
        print(f"devicebio: {result.outcome.message}", file=sys.stderr)
        if result.fallbacks:
            print(f"fallbacks: --method {' | '.join(result.fallbacks)}", file=sys.stderr)
    return EXIT_REFUSED


def cmd_enroll(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Consent

    if not args.consent:
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            "enrolment needs the user's explicit consent",
            hint=f"show the user the purpose ({args.purpose!r}) and retention "
            f"({args.retention_days} days), then pass --consent",
        )
    vault = open_vault(args)
    require_pin_if_set(vault)
    auth = face_authenticator(vault, args)
    source = open_frames(args)
    try:
        result = auth.enroll(args.user, source, consent=Consent(args.purpose, args.retention_days))
    finally:
        source.close()
    payload = {
        "ok": result.ok,
        "templates": result.templates,
        "frames_seen": result.frames_seen,
        "rejected": result.rejected,
        "expires_at": result.expires_at,
    }
    if not result.ok and result.outcome is not None:
        payload["outcome"] = result.outcome.code.value
        payload["message"] = result.outcome.message
    human = (
        f"enrolled {args.user}: {result.templates} templates from {result.frames_seen} frames"
        if result.ok
        else f"not enrolled: {payload.get('message')} ({result.frames_seen} frames)"
    )
    emit(args, payload, human)
    return EXIT_OK if result.ok else EXIT_REFUSED


def cmd_users(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Authenticator

    users = Authenticator(open_vault(args)).users()
    rows = [
        {
            "user": u.user,
            "templates": u.templates,
            "model": u.model,
            "purpose": u.purpose,
            "enrolled_at": u.enrolled_at,
            "expires_at": u.expires_at,
        }
        for u in users
    ]
    human = "\n".join(f"{r['user']}\t{r['templates']} templates\t{r['purpose']}" for r in rows)
    emit(args, {"users": rows}, human or "nobody is enrolled")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    from devicebio.authenticator import Authenticator

    vault = open_vault(args)
    require_pin_if_set(vault)
    Authenticator(vault).remove(args.user)
    emit(args, {"ok": True}, f"removed {args.user}: templates, their key and consent deleted")
    return EXIT_OK


def cmd_renew(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    require_pin_if_set(vault)
    from devicebio.authenticator import Authenticator
    from devicebio.vision.pipeline import FacePipeline

    Authenticator(vault, pipeline=FacePipeline()).renew(args.user)
    emit(args, {"ok": True}, f"renewed {args.user}: templates re-keyed, the old key destroyed")
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    """Show the capture quality the pipeline sees, frame by frame. With ``--user``: after the
    PIN, one face attempt over those frames, counted against the attempt limits like any
    other and answered yes or no (never per frame, never a score: anything else would be a
    free oracle for tuning a presentation attack)."""
    from devicebio.authenticator import Authenticator
    from devicebio.fallback import Pin
    from devicebio.sources import StaticFrames
    from devicebio.vision.pipeline import FaceCapture, FacePipeline

    pipeline = FacePipeline(progress=not args.json)
    auth = None
    if args.user:
        if not args.vault:
            raise DeviceBioError(Reason.INVALID_ARGUMENT, "--user needs --vault")
        vault = open_vault(args)
        Pin(vault).verify(read_secret("PIN: "))  # PIN_NOT_SET without one: nothing to verify
        auth = Authenticator(vault, pipeline=pipeline)
        auth.limiter.check()  # LOCKED_OUT before any capture
    source = open_frames(args)
    rows, images = [], []
    try:
        for n, frame in enumerate(source.frames()):
            if n >= args.frames:
                break
            images.append(frame.rgb)
            result = pipeline.analyze(frame.rgb)
            row: dict[str, Any] = {"frame": n, "liveness": "not checked"}
            if isinstance(result, FaceCapture):
                row.update({k: round(v, 1) for k, v in result.quality.items()})
                row["verdict"] = "ok"
            else:
                row["verdict"] = result.message
            rows.append(row)
            if not args.json:
                print("  ".join(f"{k}={v}" for k, v in row.items()))
    finally:
        source.close()
    payload: dict[str, Any] = {"frames": rows}
    code = EXIT_OK
    if auth is not None:
        attempt = auth.verify_face(args.user, StaticFrames(images))
        payload["outcome"] = attempt.outcome.code.value
        payload["message"] = attempt.outcome.message
        if attempt.outcome.code.value in ("matched", "no_match"):
            payload["match"] = "yes" if attempt.outcome.ok else "no"
        code = EXIT_OK if attempt.outcome.ok else EXIT_REFUSED
        if not args.json:
            print(f"match: {payload.get('match', '-')} ({attempt.outcome.message})")
    if args.json:
        print(json.dumps(payload, indent=2))
    return code


def add_parsers(sub: Any) -> None:
    for name, fn, help_ in (
        ("register", cmd_register, "create a credential for a relying party"),
        ("authenticate", cmd_authenticate, "sign an assertion for a relying party"),
    ):
        p = add_command(sub, name, fn, help_)
        vault_args(p)
        rp_args(p)
        if name == "register":
            p.add_argument(
                "--method",
                choices=[Fallback.PIN.value, Fallback.RECOVERY.value],
                default=Fallback.PIN.value,
                help="how the user is verified (secret read from stdin)",
            )
            p.add_argument("--user", required=True, help="the account name at the RP")
        else:
            p.add_argument(
                "--method",
                choices=["face", *(f.value for f in Fallback)],
                default=Fallback.PIN.value,
                help="face (with --user and --source); a PIN / recovery code from stdin; "
                "or a FIDO2 security key enrolled with this device",
            )
            p.add_argument("--user", help="the enrolled user (face)")
            p.add_argument("--source", help="camera, camera:N, a video, a photo or a folder")
            p.add_argument(
                "--liveness",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="challenge-bound liveness prompts (default: on for a camera, off otherwise)",
            )

    p = add_command(sub, "enroll", cmd_enroll, "enrol a face (needs the PIN when one is set)")
    vault_args(p)
    p.add_argument("--user", required=True)
    p.add_argument("--source", required=True, help="camera, camera:N, a video or photos")
    p.add_argument("--purpose", default="sign-in on this device", help="shown to the user")
    p.add_argument("--retention-days", type=int, default=365, help="templates deleted after")
    p.add_argument("--consent", action="store_true", help="the user agreed to purpose/retention")
    vault_args(add_command(sub, "users", cmd_users, "list enrolled users (no biometric data)"))
    for name, fn, help_ in (
        ("remove", cmd_remove, "delete a user's templates and their key (needs the PIN)"),
        ("renew", cmd_renew, "re-key a user's templates (needs the PIN)"),
    ):
        p = add_command(sub, name, fn, help_)
        vault_args(p)
        p.add_argument("--user", required=True)
    p = add_command(
        sub,
        "test",
        cmd_test,
        "show capture quality frame by frame; with --user and the PIN, one counted face attempt",
    )
    p.add_argument("--source", required=True)
    p.add_argument("--vault", default=os.environ.get("DEVICEBIO_VAULT"))
    p.add_argument("--keyring", action="store_true")
    p.add_argument(
        "--user", help="then one face attempt for this user (needs the PIN; counts like any)"
    )
    p.add_argument("--frames", type=int, default=30, help="stop after this many frames")
    p.add_argument("--json", action="store_true")
