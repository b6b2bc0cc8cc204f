"""``inspect``: decode our formats for people, as JSON.

Registration and assertion JSON, a raw attestation object (binary or base64url text) and a
revocation list (COSE_Sign1). Parsing is the protocol's strict parsers, so what ``inspect``
shows is exactly what the verifier would read; it decides nothing (a revocation list's
signature is checked only with ``--issuer-key``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import cbor2
import nacl.signing

from devicebio import protocol
from verifier.errors import Reason, VerifierError, protocol_errors
from verifier.revocation import parse_revocation_list
from verifier.revocation.codec import decode_unverified
from verifier.views import b64url_text, liveness_json, revocation_list_to_json

from ._common import EXIT_OK, AddCommand, read_input, verify_key_arg

_b64url = protocol.b64url_encode


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
        "liveness": liveness_json(ext.liveness),
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
            rl = decode_unverified(data)
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


def _maybe_b64url_text(data: bytes) -> bytes | None:
    try:
        return b64url_text(data.decode("ascii").strip(), "input")
    except (UnicodeDecodeError, VerifierError):
        return None


def inspect_bytes(data: bytes, issuer_key: nacl.signing.VerifyKey | None) -> dict[str, Any]:
    """What ``verifier inspect`` prints for ``data``; raises ``VerifierError(MALFORMED)``
    (or ``REVOCATION_LIST_BAD_SIGNATURE`` with a key) for anything it cannot decode."""
    with protocol_errors():
        stripped = data.strip()
        if stripped[:1] == b"{":
            try:
                obj = json.loads(stripped)
            except (ValueError, RecursionError) as exc:  # nesting past the stack: refuse
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


def _cmd_inspect(args: argparse.Namespace) -> int:
    data = read_input(args.file)
    issuer_key = verify_key_arg(args.issuer_key) if args.issuer_key else None
    print(json.dumps(inspect_bytes(data, issuer_key), indent=2, sort_keys=True))
    return EXIT_OK


def register_commands(command: AddCommand) -> None:
    p = command(
        "inspect",
        _cmd_inspect,
        "decode a registration/assertion JSON, attestation object or revocation list",
        db=False,
        json_flag=False,
    )
    p.add_argument("file", help="file to decode ('-' for stdin)")
    p.add_argument("--issuer-key", help="check a revocation list's signature with this key")
