"""``verifier``: the relying party's command line, on one SQLite database (``--db``).

Every command that reads or changes verifier state takes ``--db PATH``; several ``verifier``
processes may share one file. Output is text for people, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cbor2
import nacl.exceptions
import nacl.signing

from devicebio import protocol
from verifier.challenges import Purpose, issue_challenge
from verifier.errors import Reason, VerifierError, protocol_errors
from verifier.revocation import (
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    _decode_unverified,
    install_revocation_list,
    parse_revocation_list,
    revocation_list_to_json,
    sign_revocation_list,
)
from verifier.store import SQLiteStore

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STORAGE = 3

_EPILOG = """\
exit codes:
  0  ok
  1  refused by the verifier; prints "refused: <reason>" (with --json:
     {"ok": false, "reason": "<reason>", "message": "..."})
  2  usage error (bad arguments, unreadable key material, nothing to do)
  3  storage or I/O error (database unusable, file unreadable or unwritable)
"""

_DEFAULT_ISSUER = "verifier"
# base64url may begin with "-", which argparse would take for an option.
_CHALLENGE_HELP = "as printed by `verifier challenge`; write --challenge=VALUE"
_MAX_TTL = 86_400.0
_REVOKE_ATTEMPTS = 10
_KEY_FILE_KIND = "devicebio-revocation-signing-key"


class _UsageError(Exception):
    """A mistake on the command line; exit code 2."""


# -- small helpers ------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_arg(text: str, what: str) -> bytes:
    """Lenient on padding (people paste from many tools), strict on the alphabet."""
    cleaned = text.strip().rstrip("=")
    if not cleaned or any(c not in _B64URL_CHARS for c in cleaned) or len(cleaned) % 4 == 1:
        raise _UsageError(f"{what} must be base64url")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _UsageError(f"{what} must be base64url") from exc


_B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _hex_arg(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text.strip())
    except ValueError as exc:
        raise _UsageError(f"{what} must be hex") from exc
    if not value:
        raise _UsageError(f"{what} must not be empty")
    return value


def _utc(seconds: float) -> str | None:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return None


def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"ok": True, **obj}, indent=2, sort_keys=True))
    else:
        print(text)


def _read_input(path: str | None) -> bytes:
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Temp file in the same directory, fsync, then rename (or link, when the target must
    not exist yet), so a reader never sees half a file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # FileExistsError if someone created it meanwhile
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[SQLiteStore]:
    store = SQLiteStore(args.db)
    try:
        yield store
    finally:
        store.close()


# -- key files ----------------------------------------------------------------------------
#
# The signing key file is a JSON Web Key (RFC 8037, OKP / Ed25519) with a "use" marker, so
# standard tools can read it; "d" is the 32-byte seed. A public key file may be the same
# JWK without "d", or just the base64url (or hex) of the 32-byte public key.


def _load_signing_key(path: str) -> nacl.signing.SigningKey:
    raw = Path(path).read_bytes()
    try:
        jwk = json.loads(raw)
        if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("not an OKP/Ed25519 JWK")
        seed = _b64url_arg(str(jwk["d"]), "d")
        key = nacl.signing.SigningKey(seed)
        if "x" in jwk and _b64url_arg(str(jwk["x"]), "x") != bytes(key.verify_key):
            raise ValueError("x does not match d")
        return key
    except (ValueError, KeyError, _UsageError, nacl.exceptions.CryptoError) as exc:
        raise _UsageError(f"{path}: not a revocation signing key ({exc})") from exc


def _load_verify_key(path: str) -> nacl.signing.VerifyKey:
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", "replace").strip()
    try:
        if text.startswith("{"):
            jwk = json.loads(text)
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise ValueError("not an OKP/Ed25519 JWK")
            if "d" in jwk:
                return _load_signing_key(path).verify_key
            public = _b64url_arg(str(jwk["x"]), "x")
        elif len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            public = bytes.fromhex(text)
        else:
            public = _b64url_arg(text, "public key")
        if len(public) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return nacl.signing.VerifyKey(public)
    except (ValueError, KeyError, _UsageError, nacl.exceptions.CryptoError) as exc:
        raise _UsageError(f"{path}: not an Ed25519 public key ({exc})") from exc


# -- commands -----------------------------------------------------------------------------


def _cmd_challenge(args: argparse.Namespace) -> int:
    if not 0 < args.ttl <= _MAX_TTL:
        raise _UsageError(f"--ttl must be in (0, {_MAX_TTL:.0f}] seconds")
    with _store(args) as store:
        c = issue_challenge(store, user=args.user, purpose=Purpose(args.purpose), ttl=args.ttl)
    value = _b64url(c.value)
    _emit(
        args,
        {
            "challenge": value,
            "user": c.user,
            "purpose": c.purpose.value,
            "expires_at": c.expires_at,
            "expires_at_utc": _utc(c.expires_at),
        },
        value,
    )
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = nacl.signing.SigningKey.generate()
    public = _b64url(bytes(key.verify_key))
    jwk = {
        "kty": "OKP",
        "crv": "Ed25519",
        "d": _b64url(bytes(key)),
        "x": public,
        "use": "sig",
        "devicebio": _KEY_FILE_KIND,
    }
    out = Path(args.out)
    if out.exists() and not args.force:
        raise _UsageError(f"{out} exists; refusing to overwrite a key (use --force)")
    data = (json.dumps(jwk, indent=2) + "\n").encode()
    try:
        _write_atomic(out, data, mode=0o600, exclusive=not args.force)
    except FileExistsError as exc:
        raise _UsageError(f"{out} exists; refusing to overwrite a key") from exc
    if args.public_out:
        public_jwk = {k: jwk[k] for k in ("kty", "crv", "x", "use")}
        _write_atomic(Path(args.public_out), (json.dumps(public_jwk, indent=2) + "\n").encode())
    _emit(args, {"public_key": public, "key_file": str(out)}, public)
    return EXIT_OK


def _new_entry(args: argparse.Namespace, now: int) -> RevocationEntry:
    reason_text = args.reason.strip().lower().replace("-", "_")
    try:
        reason = RevocationReason(reason_text)
    except ValueError as exc:
        choices = ", ".join(r.value for r in RevocationReason)
        raise _UsageError(f"unknown reason {args.reason!r}; one of {choices}") from exc
    kind: EntryKind
    value: bytes | str
    if args.credential_id is not None:
        kind, value = EntryKind.CREDENTIAL_ID, _b64url_arg(args.credential_id, "--credential-id")
    elif args.device_id is not None:
        kind, value = EntryKind.DEVICE_KEY, _hex_arg(args.device_id, "--device-id")
    elif args.model_id is not None:
        kind, value = EntryKind.MODEL_ID, args.model_id
    else:
        kind, value = EntryKind.SDK_VERSION, args.sdk_version
    return RevocationEntry(kind=kind, value=value, reason=reason, revoked_at=now)


def _next_list(
    args: argparse.Namespace,
    store: SQLiteStore,
    key: nacl.signing.SigningKey,
    entry: RevocationEntry | None,
    now: int,
) -> tuple[RevocationList, bytes]:
    """The list in force plus ``entry`` (None: the same entries, re-signed), serial + 1."""
    state = store.get_revocation_state()
    previous: RevocationList | None = None
    if state is not None:
        # The list in force must be ours: carrying over entries we cannot verify would let
        # a tampered database launder them into a list we sign.
        previous = parse_revocation_list(state[1], key.verify_key)
    entries = previous.entries if previous else ()
    for old in entries:
        if entry is not None and old.kind is entry.kind and old.value == entry.value:
            raise _UsageError(
                f"{entry.kind.value} already revoked ({old.reason.value}) "
                f"in serial {previous.serial if previous else 0}"
            )
    rl = RevocationList(
        issuer=args.issuer or (previous.issuer if previous else _DEFAULT_ISSUER),
        serial=(state[0] + 1) if state is not None else 1,
        this_update=now,
        next_update=now + int(args.next_update_days * 86_400),
        entries=(*entries, entry) if entry is not None else entries,
    )
    return rl, sign_revocation_list(rl, key)


def _cmd_revoke(args: argparse.Namespace) -> int:
    return _publish(args, _new_entry(args, int(time.time())))


def _cmd_revocation_publish(args: argparse.Namespace) -> int:
    return _publish(args, None)


def _publish(args: argparse.Namespace, entry: RevocationEntry | None) -> int:
    """Sign and install the next list: the one in force plus ``entry`` (or just re-signed, so
    relying parties never see it go stale)."""
    if not 0 < args.next_update_days <= 3650:
        raise _UsageError("--next-update-days must be in (0, 3650]")
    key = _load_signing_key(args.key)
    now = int(time.time())
    with _store(args) as store:
        for attempt in range(_REVOKE_ATTEMPTS):
            rl, data = _next_list(args, store, key, entry, now)
            try:
                install_revocation_list(store, data, key.verify_key, now=now)
                break
            except VerifierError as exc:
                # Another `verifier revoke` installed the same serial first: rebuild on top
                # of its list rather than lose either entry.
                if exc.reason is not Reason.REVOCATION_LIST_ROLLBACK:
                    raise
                if attempt == _REVOKE_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 + secrets.randbelow(40) / 1000)  # de-synchronise the racers
        if entry is not None:
            store.audit(
                "revoked", kind=entry.kind.value, reason=entry.reason.value, serial=rl.serial
            )
        else:
            store.audit("revocation_list_published", serial=rl.serial)
    if args.out:
        _write_atomic(Path(args.out), data)
    _emit(
        args,
        {"list": revocation_list_to_json(rl), "written_to": args.out},
        f"revocation list serial {rl.serial} installed: {len(rl.entries)} entries, "
        f"next update {_utc(rl.next_update)}" + (f", written to {args.out}" if args.out else ""),
    )
    return EXIT_OK


def _cmd_revocation_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        state = store.get_revocation_state()
    if state is None:
        _emit(args, {"list": None}, "no revocation list installed")
        return EXIT_OK
    serial, data = state
    if args.issuer_key:
        rl = parse_revocation_list(data, _load_verify_key(args.issuer_key))
        signature = "valid"
    else:
        rl = _decode_unverified(data)
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
    _emit(
        args,
        {"list": view, "highest_serial": serial, "stale": stale, "signature": signature},
        "\n".join(lines),
    )
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from verifier.server import create_app, serve
    except ImportError:
        raise _UsageError("the HTTP service needs: pip install 'devicebio[server]'") from None
    token = os.environ.get("VERIFIER_ADMIN_TOKEN")
    policy = _policy(args)
    app = create_app(
        db=args.db,
        rp_id=args.rp_id,
        origin=args.origin,
        revocation_key_file=args.key,
        policy=policy,
        admin_token=token,
        open_registration=args.open_registration,
    )

    def listening(url: str) -> None:
        print(json.dumps({"url": url}) if args.json else f"verifier serving on {url}", flush=True)

    serve(app, host=args.host, port=args.port, on_listening=listening)
    return EXIT_OK


def _cmd_revocation_install(args: argparse.Namespace) -> int:
    data = _read_input(args.file)
    key = _load_verify_key(args.issuer_key)
    with _store(args) as store:
        rl = install_revocation_list(store, data, key)
    _emit(
        args,
        {"list": revocation_list_to_json(rl)},
        f"revocation list serial {rl.serial} in force ({len(rl.entries)} entries)",
    )
    return EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    with _store(args) as store:
        removed = store.purge_expired_challenges(time.time())
    _emit(args, {"removed": removed}, f"removed {removed} expired challenges")
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    if not 0 < args.limit <= 100_000:
        raise _UsageError("--limit must be in 1..100000")
    with _store(args) as store:
        events = store.audit_events(args.limit)
    rows = [{"time": t, "time_utc": _utc(t), "event": e, "fields": f} for t, e, f in events]
    text = "\n".join(
        f"{r['time_utc']}  {r['event']:<28} {json.dumps(r['fields'], sort_keys=True)}" for r in rows
    )
    _emit(args, {"events": rows}, text or "no audit events")
    return EXIT_OK


def _liveness_json(liveness: Any) -> dict[str, Any]:
    return {
        "kind": liveness.kind,
        "passed": liveness.passed,
        "frames": liveness.frames,
        "sequence_hash": None if liveness.sequence_hash is None else liveness.sequence_hash.hex(),
    }


def _cmd_register(args: argparse.Namespace) -> int:
    from verifier.registration import verify_registration

    challenge = _b64url_arg(args.challenge, "--challenge")
    user_handle = _b64url_arg(args.user_handle, "--user-handle") if args.user_handle else None
    issuer_key = _load_verify_key(args.issuer_key) if args.issuer_key else None
    payload = _read_input(args.file)
    with _store(args) as store:
        result = verify_registration(
            credential=payload,
            expected_challenge=challenge,
            expected_origin=args.origin,
            expected_rp_id=args.rp_id,
            store=store,
            user=args.user,
            user_handle=user_handle,
            revocation_issuer_key=issuer_key,
        )
    credential_id = _b64url(result.credential_id)
    _emit(
        args,
        {
            "credential_id": credential_id,
            "user": result.user,
            "device_id": None if result.device_id is None else result.device_id.hex(),
            "aaguid": result.aaguid.hex(),
            "method": result.method.value,
            "liveness": _liveness_json(result.liveness),
            "model": result.model,
            "assurance": result.assurance.value,
            "user_verified": result.user_verified,
        },
        f"registered credential {credential_id} for {result.user} "
        f"({result.method.value}, assurance {result.assurance.value})",
    )
    return EXIT_OK


def _policy(args: argparse.Namespace) -> Any:
    from devicebio.protocol import Method
    from verifier.policy import Policy

    methods = frozenset(Method)
    if args.methods:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
        try:
            methods = frozenset(Method(m) for m in names)
        except ValueError as exc:
            choices = ",".join(m.value for m in Method)
            raise _UsageError(f"--methods: unknown method; choose from {choices}") from exc
        if not methods:
            raise _UsageError("--methods: name at least one method")
    return Policy(accepted_methods=methods, require_liveness=args.require_liveness)


def _cmd_verify(args: argparse.Namespace) -> int:
    from verifier.assertion import verify_assertion

    challenge = _b64url_arg(args.challenge, "--challenge")
    policy = _policy(args)
    issuer_key = _load_verify_key(args.issuer_key) if args.issuer_key else None
    payload = _read_input(args.file)
    with _store(args) as store:
        result = verify_assertion(
            credential=payload,
            expected_challenge=challenge,
            expected_origin=args.origin,
            expected_rp_id=args.rp_id,
            store=store,
            policy=policy,
            revocation_issuer_key=issuer_key,
        )
    _emit(
        args,
        {
            "credential_id": _b64url(result.credential_id),
            "user": result.user,
            "sign_count": result.new_sign_count,
            "method": result.method.value,
            "liveness": _liveness_json(result.liveness),
            "model": result.model,
            "sdk_version": result.sdk_version,
            "assurance": result.assurance.value,
            "user_verified": result.user_verified,
            "re_enrol_required": result.re_enrol_required,
            "revocation_checked": issuer_key is not None,
        },
        f"verified: {result.user} by {result.method.value}, assurance "
        f"{result.assurance.value}, counter {result.new_sign_count}"
        + ("; re-enrolment required" if result.re_enrol_required else ""),
    )
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    data = _read_input(args.file)
    issuer_key = _load_verify_key(args.issuer_key) if args.issuer_key else None
    print(json.dumps(_inspect_bytes(data, issuer_key), indent=2, sort_keys=True))
    return EXIT_OK


# -- inspect: decode our formats for people ----------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Generic CBOR values as JSON: bytes become base64url text, map keys become text."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return _b64url(bytes(obj))
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, cbor2.CBORTag):
        return {"tag": obj.tag, "value": _jsonable(obj.value)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def _extension_json(ext: Any) -> dict[str, Any]:
    return {
        "version": ext.version,
        "method": str(ext.method),
        "liveness": _liveness_json(ext.liveness),
        "model": ext.model,
        "assurance": ext.assurance,
        "device_id": None if ext.device_id is None else ext.device_id.hex(),
        "sdk_version": ext.sdk_version,
    }


def _auth_data_json(auth_data: Any) -> dict[str, Any]:
    flag = type(auth_data).FLAG
    out: dict[str, Any] = {
        "rpIdHash": bytes(auth_data.rp_id_hash).hex(),
        "flags": {"raw": int(auth_data.flags)} | {f.name: bool(auth_data.flags & f) for f in flag},
        "signCount": int(auth_data.counter),
    }
    cred = auth_data.credential_data
    if cred is not None:
        out["attestedCredentialData"] = {
            "aaguid": str(cred.aaguid),
            "credentialId": _b64url(bytes(cred.credential_id)),
            "publicKey": _jsonable(dict(cred.public_key)),
        }
    if auth_data.extensions is not None:
        extensions = {
            str(k): v
            for k, v in _jsonable(auth_data.extensions).items()
            if k != protocol.EXTENSION_ID
        }
        ext = protocol.devicebio_extension_of(auth_data)
        if ext is not None:
            extensions[protocol.EXTENSION_ID] = _extension_json(ext)
        out["extensions"] = extensions
    return out


def _client_data_json(client_data: Any) -> Any:
    try:
        return json.loads(bytes(client_data))
    except ValueError:
        return _b64url(bytes(client_data))


def _attestation_json(att: Any) -> dict[str, Any]:
    return {
        "fmt": att.fmt,
        "attStmt": _jsonable(dict(att.att_stmt)),
        "authData": _auth_data_json(att.auth_data),
    }


def _inspect_json(obj: Any) -> dict[str, Any]:
    response = obj.get("response") if isinstance(obj, dict) else None
    if isinstance(response, dict) and "attestationObject" in response:
        reg = protocol.parse_registration_json(obj)
        return {
            "format": "registration",
            "id": _b64url(reg.credential_id),
            "type": reg.type,
            "authenticatorAttachment": reg.authenticator_attachment,
            "transports": list(reg.transports),
            "clientData": _client_data_json(reg.client_data),
            "attestationObject": _attestation_json(reg.attestation),
        }
    if isinstance(response, dict) and "signature" in response:
        auth = protocol.parse_authentication_json(obj)
        return {
            "format": "assertion",
            "id": _b64url(auth.credential_id),
            "type": auth.type,
            "authenticatorAttachment": auth.authenticator_attachment,
            "clientData": _client_data_json(auth.client_data),
            "authenticatorData": _auth_data_json(auth.authenticator_data),
            "signature": _b64url(auth.signature),
            "userHandle": None if auth.user_handle is None else _b64url(auth.user_handle),
        }
    raise VerifierError(Reason.MALFORMED, "JSON is neither a registration nor an assertion")


def _inspect_binary(data: bytes, issuer_key: nacl.signing.VerifyKey | None) -> dict[str, Any]:
    if data[:1] == b"\xd2":  # CBOR tag 18: COSE_Sign1, i.e. a revocation list
        if issuer_key is not None:
            rl = parse_revocation_list(data, issuer_key)
            signature = "valid"
        else:
            rl = _decode_unverified(data)
            signature = "not checked (pass --issuer-key)"
        return {
            "format": "revocation-list",
            "signature": signature,
            "stale": time.time() > rl.next_update,
            "list": revocation_list_to_json(rl),
        }
    with protocol_errors():
        att = protocol.parse_attestation_object(data)
        return {"format": "attestation-object", **_attestation_json(att)}


def _inspect_bytes(data: bytes, issuer_key: nacl.signing.VerifyKey | None) -> dict[str, Any]:
    with protocol_errors():
        stripped = data.strip()
        if stripped[:1] == b"{":
            try:
                obj = json.loads(stripped)
            except ValueError as exc:
                raise VerifierError(Reason.MALFORMED, "invalid JSON") from exc
            return _inspect_json(obj)
        try:
            return _inspect_binary(data, issuer_key)
        except VerifierError:
            decoded = _maybe_b64url_text(stripped)
            if decoded is None or decoded == data:
                raise
        # Perhaps base64url text of one of the binary formats.
        return _inspect_binary(decoded, issuer_key)


def _maybe_b64url_text(data: bytes) -> bytes | None:
    try:
        return _b64url_arg(data.decode("ascii"), "input") or None
    except (UnicodeDecodeError, _UsageError):
        return None


# -- parser -------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verifier",
        description="Relying-party side of devicebio: challenges, registration, assertion "
        "verification and revocation lists, on one SQLite database.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        db: bool = True,
        json_flag: bool = True,
        where: Any = sub,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = where.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        if db:
            p.add_argument("--db", required=True, help="the verifier's SQLite database file")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    p = command("challenge", _cmd_challenge, "issue a single-use challenge (base64url)")
    p.add_argument("--user", required=True)
    p.add_argument("--purpose", required=True, choices=[x.value for x in Purpose])
    p.add_argument("--ttl", type=float, default=300.0, help="seconds (default 300)")

    p = command("register", _cmd_register, "verify a registration and store the credential")
    p.add_argument("--rp-id", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--challenge", required=True, help=_CHALLENGE_HELP)
    p.add_argument("--user-handle", help="base64url user.id sent in the creation options")
    p.add_argument("--file", help="registration JSON (default: stdin)")
    p.add_argument("--issuer-key", help="revocation-list public key; enforces the list")

    p = command("verify", _cmd_verify, "verify an assertion against a stored credential")
    p.add_argument("--rp-id", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--challenge", required=True, help=_CHALLENGE_HELP)
    p.add_argument("--require-liveness", action="store_true")
    p.add_argument("--methods", help="accepted methods, comma-separated (face,pin,...)")
    p.add_argument("--issuer-key", help="revocation-list public key; enforces the list")
    p.add_argument("--file", help="assertion JSON (default: stdin)")

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
    p.add_argument("--issuer", help=f"issuer name (default: previous, else {_DEFAULT_ISSUER!r})")
    p.add_argument("--out", help="also write the signed list to this file")

    command("purge", _cmd_purge, "delete expired challenges")
    p = command("audit", _cmd_audit, "show the newest audit events")
    p.add_argument("--limit", type=int, default=50, help="how many (default 50)")

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
    p.add_argument("--issuer", help=f"issuer name (default: previous, else {_DEFAULT_ISSUER!r})")
    p.add_argument("--out", help="also write the signed list to this file")
    p = command("install", _cmd_revocation_install, "install a signed list", where=rev_sub)
    p.add_argument("--issuer-key", required=True, help="public key of the list's issuer")
    p.add_argument("file", nargs="?", help="signed list (default: stdin)")

    p = command("serve", _cmd_serve, "the reference relying-party HTTP service (loopback)")
    p.add_argument("--rp-id", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--key", help="revocation-list signing key (enables /revoke, /revocation)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    p.add_argument("--methods", help="accepted methods, comma-separated (default: all)")
    p.add_argument("--require-liveness", action="store_true")
    p.add_argument(
        "--open-registration", action="store_true", help="anyone may register a new user"
    )

    p = command(
        "inspect",
        _cmd_inspect,
        "decode a registration/assertion JSON, attestation object or revocation list",
        db=False,
        json_flag=False,
    )
    p.add_argument("file", help="file to decode ('-' for stdin)")
    p.add_argument("--issuer-key", help="check a revocation list's signature with this key")
    return parser


def _fail(args: argparse.Namespace | None, code: int, reason: str, message: str) -> int:
    if args is not None and getattr(args, "json", False):
        print(json.dumps({"ok": False, "reason": reason, "message": message}, sort_keys=True))
    elif code == EXIT_REFUSED:
        print(f"refused: {reason} ({message})", file=sys.stderr)
    else:
        print(f"verifier: {reason}: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; keep Python quiet.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except _UsageError as exc:
        return _fail(args, EXIT_USAGE, "usage", str(exc))
    except VerifierError as exc:
        message = str(exc).removeprefix(f"{exc.reason.value}: ")
        if exc.reason is Reason.STORAGE:
            return _fail(args, EXIT_STORAGE, exc.reason.value, message)
        return _fail(args, EXIT_REFUSED, exc.reason.value, message)
    except OSError as exc:
        return _fail(args, EXIT_STORAGE, "io", f"{exc.strerror or exc}: {exc.filename or ''}")
    except cbor2.CBORError as exc:  # defensive: parsers should have wrapped it already
        return _fail(args, EXIT_REFUSED, Reason.MALFORMED.value, type(exc).__name__)


if __name__ == "__main__":
    sys.exit(main())
