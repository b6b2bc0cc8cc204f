"""``devicebio``: the device command line.

Exit codes (also in ``devicebio --help``):
  0  success
  1  refused: wrong PIN or recovery code, locked out, no match, user not verified
  2  usage: bad arguments or input
  3  stored state: no vault, wrong passphrase, corrupt or tampered record
  4  environment: a model, camera or optional dependency is missing

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
from collections.abc import Callable, Sequence
from typing import Any

from devicebio.errors import DeviceBioError, Reason

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_STATE, EXIT_ENV = 0, 1, 2, 3, 4

_REFUSED = {
    Reason.SECURITY_KEY_REJECTED,
    Reason.SECURITY_KEY_NOT_TOUCHED,
    Reason.SECURITY_KEY_NOT_ENROLLED,
    Reason.PIN_WRONG,
    Reason.RECOVERY_CODE_WRONG,
    Reason.LOCKED_OUT,
    Reason.USER_NOT_VERIFIED,
}
_USAGE = {Reason.INVALID_ARGUMENT, Reason.PIN_POLICY, Reason.MALFORMED_DATA, Reason.BAD_IMAGE}
_ENV = {
    Reason.MODEL_MISSING,
    Reason.MODEL_HASH_MISMATCH,
    Reason.MODEL_BUILD_FAILED,
    Reason.FRAME_SOURCE,
    Reason.DEPENDENCY_MISSING,
    Reason.KEY_PROVIDER_UNAVAILABLE,
    Reason.SECURITY_KEY_UNAVAILABLE,
}

EPILOG = """exit codes:
  0  success
  1  refused (wrong PIN or recovery code, locked out, no match, not verified)
  2  usage (bad arguments or input)
  3  stored state (no vault, wrong passphrase, corrupt or tampered record)
  4  environment (model, camera or optional dependency missing)

secrets: the vault passphrase comes from DEVICEBIO_PASSPHRASE or a prompt; a PIN or
recovery code from standard input (one line) or a prompt. Never from arguments."""


def exit_code_for(reason: Reason) -> int:
    if reason in _REFUSED:
        return EXIT_REFUSED
    if reason in _USAGE:
        return EXIT_USAGE
    if reason in _ENV:
        return EXIT_ENV
    return EXIT_STATE


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
    from devicebio.vault import KeyringKey, PassphraseKey

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
    from devicebio.vault import Vault

    return Vault.open(args.vault, key_provider(args))


def challenge_bytes(text: str) -> bytes:
    from devicebio.wire import b64url_decode

    return b64url_decode(text)


# ---- output -----------------------------------------------------------------------------


def emit(args: argparse.Namespace, payload: dict[str, Any], human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        print(human)


# ---- commands ---------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from devicebio.vault import Vault

    vault = Vault.create(args.vault, key_provider(args, confirm=True))
    emit(args, {"ok": True, "vault": str(vault.path)}, f"created vault {vault.path}")
    return EXIT_OK


def cmd_pin_set(args: argparse.Namespace) -> int:
    from devicebio.knowledge import Pin

    vault = open_vault(args)
    pin = Pin(vault)
    if pin.status().is_set:
        # Changing a PIN needs the old one: a thief with the unlocked vault must not reset it.
        pin.verify(read_secret("current PIN: "))
    pin.set(read_secret("new PIN: "))
    emit(args, {"ok": True}, "PIN set")
    return EXIT_OK


def cmd_recovery_new(args: argparse.Namespace) -> int:
    from devicebio.knowledge import RecoveryCodes

    vault = open_vault(args)
    _require_pin_if_set(vault)
    codes = RecoveryCodes(vault).new()
    emit(
        args,
        {"ok": True, "codes": codes},
        "recovery codes (each works once; store them offline, they are shown only now):\n"
        + "\n".join(f"  {c}" for c in codes),
    )
    return EXIT_OK


def verify_knowledge(vault: Any, method: str) -> Any:
    """Run the PIN or recovery-code check and return the UserVerification it earns."""
    from devicebio.credentials import UserVerification
    from devicebio.knowledge import AttemptLimiter, Pin, RecoveryCodes
    from devicebio.wire import LivenessClaim, Method

    if method == "pin":
        Pin(vault).verify(read_secret("PIN: "))
    elif method == "recovery":
        RecoveryCodes(vault).use(read_secret("recovery code: "))
        Pin(vault).unblock()
    elif method == "security-key":
        from devicebio.security_key import SecurityKeyFallback, find_security_keys

        keys = find_security_keys()
        if not keys:
            raise DeviceBioError(
                Reason.SECURITY_KEY_UNAVAILABLE,
                "no FIDO2 security key found",
                hint="plug in the key enrolled with this device, or use --method pin",
            )
        print("touch your security key", file=sys.stderr)
        SecurityKeyFallback(vault).verify(keys[0])
    else:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, f"method {method!r} is not available here")
    AttemptLimiter(vault).record_fallback_success()
    return UserVerification(
        method=Method(method), liveness=LivenessClaim.none(), model=None, verified=True
    )


def cmd_register(args: argparse.Namespace) -> int:
    from devicebio.credentials import Credentials

    vault = open_vault(args)
    verification = verify_knowledge(vault, args.method)
    registration = Credentials(vault).register(
        rp_id=args.rp_id,
        origin=args.origin,
        challenge=challenge_bytes(args.challenge),
        user_name=args.user,
        verification=verification,
    )
    print(json.dumps(registration.to_json(), indent=2, sort_keys=True))
    return EXIT_OK


def cmd_authenticate(args: argparse.Namespace) -> int:
    from devicebio.credentials import Credentials

    vault = open_vault(args)
    if args.method == "face":
        return _authenticate_face(args, vault)
    verification = verify_knowledge(vault, args.method)
    assertion = Credentials(vault).authenticate(
        rp_id=args.rp_id,
        origin=args.origin,
        challenge=challenge_bytes(args.challenge),
        verification=verification,
    )
    print(json.dumps(assertion.to_json(), indent=2, sort_keys=True))
    return EXIT_OK


PROMPT_TEXT = {
    "turn_left": "turn your head to YOUR left",
    "turn_right": "turn your head to YOUR right",
    "look_up": "look up",
    "blink": "blink",
}


def _authenticator(vault: Any, args: argparse.Namespace, *, liveness: bool = False) -> Any:
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


def _source(args: argparse.Namespace) -> Any:
    from devicebio.sources import open_source

    return open_source(args.source)


def _authenticate_face(args: argparse.Namespace, vault: Any) -> int:
    if not args.user or not args.source:
        raise DeviceBioError(Reason.INVALID_ARGUMENT, "--method face needs --user and --source")
    if args.liveness is None:
        args.liveness = args.source == "camera" or args.source.startswith("camera:")
    auth = _authenticator(vault, args, liveness=args.liveness)
    source = _source(args)
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


def _require_pin_if_set(vault: Any) -> None:
    """Changing who the face unlocks needs the knowledge factor: a thief holding the unlocked
    device must not enrol their own face."""
    from devicebio.knowledge import Pin

    if Pin(vault).status().is_set:
        Pin(vault).verify(read_secret("PIN: "))


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
    _require_pin_if_set(vault)
    auth = _authenticator(vault, args)
    source = _source(args)
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
    _require_pin_if_set(vault)
    Authenticator(vault).remove(args.user)
    emit(args, {"ok": True}, f"removed {args.user}: templates, their key and consent deleted")
    return EXIT_OK


def cmd_renew(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    _require_pin_if_set(vault)
    from devicebio.authenticator import Authenticator
    from devicebio.vision.pipeline import FacePipeline

    Authenticator(vault, pipeline=FacePipeline()).renew(args.user)
    emit(args, {"ok": True}, f"renewed {args.user}: templates re-keyed, the old key destroyed")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    import stat as stat_mod
    from pathlib import Path

    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail})

    try:
        import onnxruntime

        check(
            "onnxruntime",
            True,
            f"{onnxruntime.__version__}, providers "
            f"{', '.join(onnxruntime.get_available_providers())}",
        )
    except ImportError:
        check("onnxruntime", False, "not installed: pip install 'devicebio[device]'")
    try:
        from devicebio.vision import models

        for name in models.MODELS:
            status = models.model_status(name)
            detail = {
                "ok": "matches its pinned sha256",
                "missing": "not built yet (builds on first use, offline)",
                "hash_mismatch": "DIFFERS from its pin: refused; devicebio models build --force",
            }[status]
            check(f"model {name}", status != "hash_mismatch", f"{detail} ({models.model_dir()})")
    except DeviceBioError as exc:
        check("models", False, str(exc))
    if args.vault:
        root = Path(args.vault)
        if root.is_dir():
            mode = stat_mod.S_IMODE(root.stat().st_mode)
            check("vault permissions", mode & 0o077 == 0, f"{root} mode {mode:o}")
            loose = [
                p
                for p in root.rglob("*")
                if p.is_file() and stat_mod.S_IMODE(p.stat().st_mode) & 0o077
            ]
            check("vault files private", not loose, f"{len(loose)} files readable by others")
            try:
                from devicebio.credentials import Credentials
                from devicebio.knowledge import AttemptLimiter

                vault = open_vault(args)
                creds = Credentials(vault).list()
                check(
                    "credentials",
                    True,
                    ", ".join(f"{c.rp_id}/{c.user} counter {c.sign_count}" for c in creds)
                    or "none",
                )
                st = AttemptLimiter(vault).status()
                check(
                    "face attempts", st.allowed, f"{st.state}, {st.consecutive_failures} failures"
                )
            except DeviceBioError as exc:
                check("vault opens", False, str(exc))
        else:
            check("vault", False, f"no vault at {root}")
    ok = all(c["ok"] for c in checks)
    human = "\n".join(
        f"{'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}" for c in checks
    )
    emit(args, {"ok": ok, "checks": checks}, human)
    return EXIT_OK if ok else EXIT_ENV


def cmd_test(args: argparse.Namespace) -> int:
    """Show what the pipeline sees, frame by frame; change nothing."""
    from devicebio.vision.pipeline import FaceCapture, FacePipeline

    pipeline = FacePipeline(progress=not args.json)
    templates = None
    if args.user and args.vault:
        from devicebio.authenticator import Authenticator

        key, stored = Authenticator(open_vault(args), pipeline=pipeline)._templates(args.user)
    source = _source(args)
    rows = []
    try:
        for n, frame in enumerate(source.frames()):
            if n >= args.frames:
                break
            result = pipeline.analyze(frame.rgb)
            row: dict[str, Any] = {"frame": n, "liveness": "not checked"}
            if isinstance(result, FaceCapture):
                row.update({k: round(v, 1) for k, v in result.quality.items()})
                row["verdict"] = "ok"
                if templates is None and args.user and args.vault:
                    templates = stored
                if templates is not None:
                    probe = key.protect(result.embedding)
                    # Shown to the person at the device for troubleshooting; never stored.
                    row["distance"] = round(
                        float(((templates - probe) ** 2).sum(1).min() ** 0.5), 3
                    )
            else:
                row["verdict"] = result.message
            rows.append(row)
            if not args.json:
                print("  ".join(f"{k}={v}" for k, v in row.items()))
    finally:
        source.close()
    if args.json:
        print(json.dumps({"frames": rows}, indent=2))
    return EXIT_OK


def cmd_credentials(args: argparse.Namespace) -> int:
    from devicebio.credentials import Credentials
    from devicebio.wire import b64url_encode

    rows = [
        {
            "rp_id": c.rp_id,
            "user": c.user,
            "credential_id": b64url_encode(c.credential_id),
            "sign_count": c.sign_count,
            "created_at": c.created_at,
        }
        for c in Credentials(open_vault(args)).list()
    ]
    human = "\n".join(f"{r['rp_id']}\t{r['user']}\t{r['sign_count']}" for r in rows)
    emit(args, {"credentials": rows}, human or "no credentials")
    return EXIT_OK


def cmd_models_build(args: argparse.Namespace) -> int:
    from devicebio.vision import models

    paths = models.build_models(cache_dir=args.cache_dir, force=args.force, progress=True)
    rows = [{"name": n, "path": str(p)} for n, p in zip(models.MODELS, paths, strict=True)]
    emit(args, {"ok": True, "models": rows}, "\n".join(f"built {r['path']}" for r in rows))
    return EXIT_OK


def cmd_models_verify(args: argparse.Namespace) -> int:
    from devicebio.vision import models

    rows = [
        {"name": n, "status": models.model_status(n, args.cache_dir), "sha256": s.sha256}
        for n, s in models.MODELS.items()
    ]
    ok = all(r["status"] == "ok" for r in rows)
    emit(
        args,
        {"ok": ok, "dir": str(models.model_dir(args.cache_dir)), "models": rows},
        "\n".join(f"{r['status']:>13}  {r['name']}" for r in rows),
    )
    return EXIT_OK if ok else EXIT_ENV


def cmd_models_list(args: argparse.Namespace) -> int:
    from devicebio.vision import models

    rows = [
        {
            "name": s.name,
            "model_id": s.model_id,
            "purpose": s.purpose,
            "licence": s.licence,
            "source": s.source_package,
            "sha256": s.sha256,
        }
        for s in models.MODELS.values()
    ]
    human = "\n".join(f"{r['model_id']:<40} {r['purpose']}  [{r['licence']}]" for r in rows)
    emit(args, {"models": rows, "dir": str(models.model_dir(args.cache_dir))}, human)
    return EXIT_OK


def cmd_eval_lfw(args: argparse.Namespace) -> int:
    from pathlib import Path

    from devicebio.evaluation import lfw

    base = lfw.default_lfw_dir()
    images = Path(args.images) if args.images else base / "images"
    pairs = Path(args.pairs) if args.pairs else base / "pairs.txt"
    if not images.is_dir() or not pairs.is_file():
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            f"no face set at {images} / {pairs}",
            hint="pass --images DIR --pairs FILE, or set DEVICEBIO_LFW",
        )
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    report = lfw.evaluate(
        images,
        pairs,
        folds=folds,
        detector=args.detector,
        mirror=not args.no_mirror,
        normalize=not args.no_normalize,
    )
    json_out = Path(args.json_out) if args.json_out else None
    lfw.write_outputs(report, json_out, Path(args.plot) if args.plot else None)
    shown = {k: v for k, v in report.items() if k not in ("no_face_list", "fold_thresholds")}
    print(json.dumps(shown, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_eval_liveness(args: argparse.Namespace) -> int:
    from pathlib import Path

    from devicebio.evaluation import lfw, liveness

    video = Path(args.video_dir) if args.video_dir else liveness.default_video_dir()
    lfw_dir = Path(args.lfw) if args.lfw else lfw.default_lfw_dir()
    if not video.is_dir() or not (lfw_dir / "images").is_dir():
        raise DeviceBioError(
            Reason.INVALID_ARGUMENT,
            f"no face videos at {video} or no LFW images at {lfw_dir / 'images'}",
            hint="pass --video-dir DIR --lfw DIR, or set DEVICEBIO_VIDEO / DEVICEBIO_LFW",
        )
    species = args.species.split(",") if args.species else list(liveness.SPECIES)
    report = liveness.evaluate(
        video,
        lfw_dir,
        sessions=args.sessions,
        attacks=args.attacks,
        seed=args.seed,
        species=species,
        workers=args.workers,
    )
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(liveness.format_table(report))
    return EXIT_OK


# ---- parser -----------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], int]


def _vault_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vault",
        default=os.environ.get("DEVICEBIO_VAULT"),
        required="DEVICEBIO_VAULT" not in os.environ,
        help="vault directory (default: $DEVICEBIO_VAULT)",
    )
    p.add_argument("--keyring", action="store_true", help="the vault key is in the OS keyring")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _rp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rp-id", required=True, help="relying party id, e.g. example.com")
    p.add_argument("--origin", required=True, help="origin, e.g. https://example.com")
    p.add_argument(
        "--challenge", required=True, help="the RP's challenge, base64url (write --challenge=VALUE)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devicebio",
        description="On-device face authentication that speaks WebAuthn.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Command, help_: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(
            name, help=help_, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.set_defaults(func=fn)
        return p

    p = add("init", cmd_init, "create a vault")
    _vault_args(p)
    p.add_argument(
        "--kdf",
        choices=["moderate", "interactive"],
        default="moderate",
        help="Argon2id cost for the passphrase (default moderate: 256 MiB)",
    )

    pin = sub.add_parser("pin", help="the device PIN").add_subparsers(dest="pin", required=True)
    _vault_args(add("set", cmd_pin_set, "set or change the PIN (read from stdin)", pin))

    rc = sub.add_parser("recovery-codes", help="one-time recovery codes")
    rc_sub = rc.add_subparsers(dest="rc", required=True)
    _vault_args(add("new", cmd_recovery_new, "replace all recovery codes", rc_sub))

    for name, fn, help_ in (
        ("register", cmd_register, "create a credential for a relying party"),
        ("authenticate", cmd_authenticate, "sign an assertion for a relying party"),
    ):
        p = add(name, fn, help_)
        _vault_args(p)
        _rp_args(p)
        if name == "register":
            p.add_argument(
                "--method",
                choices=["pin", "recovery"],
                default="pin",
                help="how the user is verified (secret read from stdin)",
            )
            p.add_argument("--user", required=True, help="the account name at the RP")
        else:
            p.add_argument(
                "--method",
                choices=["face", "pin", "recovery", "security-key"],
                default="pin",
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

    p = add("enroll", cmd_enroll, "enrol a face (needs the PIN when one is set)")
    _vault_args(p)
    p.add_argument("--user", required=True)
    p.add_argument("--source", required=True, help="camera, camera:N, a video or photos")
    p.add_argument("--purpose", default="sign-in on this device", help="shown to the user")
    p.add_argument("--retention-days", type=int, default=365, help="templates deleted after")
    p.add_argument("--consent", action="store_true", help="the user agreed to purpose/retention")
    _vault_args(add("users", cmd_users, "list enrolled users (no biometric data)"))
    for name, fn, help_ in (
        ("remove", cmd_remove, "delete a user's templates and their key (needs the PIN)"),
        ("renew", cmd_renew, "re-key a user's templates (needs the PIN)"),
    ):
        p = add(name, fn, help_)
        _vault_args(p)
        p.add_argument("--user", required=True)
    p = add("doctor", cmd_doctor, "check models, hashes, onnxruntime, vault permissions")
    p.add_argument("--vault", default=os.environ.get("DEVICEBIO_VAULT"))
    p.add_argument("--keyring", action="store_true")
    p.add_argument("--json", action="store_true")
    p = add("test", cmd_test, "show quality and distance frame by frame; changes nothing")
    p.add_argument("--source", required=True)
    p.add_argument("--vault", default=os.environ.get("DEVICEBIO_VAULT"))
    p.add_argument("--keyring", action="store_true")
    p.add_argument("--user", help="also show the distance to this user's templates")
    p.add_argument("--frames", type=int, default=30, help="stop after this many frames")
    p.add_argument("--json", action="store_true")

    _vault_args(add("credentials", cmd_credentials, "list credentials (no key material)"))

    m = sub.add_parser("models", help="the face models: build, verify, list")
    m_sub = m.add_subparsers(dest="models", required=True)
    for name, fn, help_ in (
        ("build", cmd_models_build, "convert the models from installed packages (offline)"),
        ("verify", cmd_models_verify, "check every cached model against its pinned sha256"),
        ("list", cmd_models_list, "what each model is, its licence and its pin"),
    ):
        p = add(name, fn, help_, m_sub)
        p.add_argument(
            "--cache-dir", help="model cache (default: $DEVICEBIO_MODEL_DIR or user cache)"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild even if cached")

    ev = sub.add_parser("eval", help="evaluation tools for reviewers")
    ev_sub = ev.add_subparsers(dest="eval", required=True)
    p = add("lfw", cmd_eval_lfw, "verification accuracy on LFW (or any set in its format)", ev_sub)
    p.add_argument("--images", help="folder of <name>/<name>_NNNN.jpg (default: shared LFW)")
    p.add_argument("--pairs", help="pairs file in LFW's View-2 format")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report here")
    p.add_argument("--plot", metavar="OUT.png", help="DET curve and score histograms")
    p.add_argument("--folds", help="only these folds, e.g. 0 or 0,1 (default: all)")
    p.add_argument("--detector", choices=["fast", "accurate"], default="fast")
    p.add_argument("--no-mirror", action="store_true", help="skip mirror-averaging (ablation)")
    p.add_argument(
        "--no-normalize", action="store_true", help="keep dlib's raw embedding length (ablation)"
    )
    p = add("liveness", cmd_eval_liveness, "APCER/BPCER of active liveness (ISO 30107-3)", ev_sub)
    p.add_argument("--sessions", type=int, default=200, help="genuine sessions (default 200)")
    p.add_argument("--attacks", type=int, default=200, help="presentations per attack species")
    p.add_argument("--seed", type=int, help="reproducible challenges and attacks")
    p.add_argument("--species", help="comma-separated subset of the attack species")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--video-dir", help="the face videos (default ../shared/data/video)")
    p.add_argument("--lfw", help="LFW folder with images/ (default ../shared/data/lfw)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DeviceBioError as exc:
        code = exit_code_for(exc.reason)
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "reason": exc.reason.value, "message": str(exc)}))
        else:
            print(f"devicebio: {exc}", file=sys.stderr)
            if exc.hint:
                print(f"hint: {exc.hint}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
