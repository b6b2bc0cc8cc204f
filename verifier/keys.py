"""The revocation-list key files: one format, one reader, one writer.

The signing key file is a JSON Web Key (RFC 8037: ``kty`` OKP, ``crv`` Ed25519) with
``"use": "sig"`` and a ``"devicebio"`` marker, so standard JOSE tools can read it; ``d`` is
the 32-byte seed and ``x`` the public key, both base64url. It is written 0600, atomically,
and never over an existing file unless the caller says so.

A public key file is the same JWK without ``d`` (what ``verifier keygen --public-out``
writes), or, because operators paste what ``keygen`` printed, just the base64url (or hex) of
the 32-byte public key. A signing key file also works wherever a public key is wanted.

Errors are ``VerifierError``: ``MALFORMED`` for a file that is not such a key (or a key file
that already exists), ``STORAGE`` when it cannot be read or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from devicebio.protocol import atomic_write, b64url_encode
from verifier.errors import Reason, VerifierError
from verifier.views import b64url_text

__all__ = [
    "KEY_FILE_KIND",
    "load_signing_key",
    "load_verify_key",
    "public_jwk",
    "signing_jwk",
    "write_public_key",
    "write_signing_key",
]

KEY_FILE_KIND = "devicebio-revocation-signing-key"
_MAX_KEY_FILE = 64 * 1024  # a JWK is ~200 bytes; refuse to slurp anything huge


def signing_jwk(key: nacl.signing.SigningKey) -> dict[str, Any]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "d": b64url_encode(bytes(key)),
        "x": b64url_encode(bytes(key.verify_key)),
        "use": "sig",
        "devicebio": KEY_FILE_KIND,
    }


def public_jwk(key: nacl.signing.VerifyKey) -> dict[str, Any]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(key)), "use": "sig"}


def _dump(jwk: dict[str, Any]) -> bytes:
    return (json.dumps(jwk, indent=2) + "\n").encode()


def _write(path: Path, data: bytes, *, mode: int, exclusive: bool) -> None:
    try:
        atomic_write(path, data, mode=mode, exclusive=exclusive)
    except FileExistsError:
        raise VerifierError(
            Reason.MALFORMED, f"{path} exists; refusing to overwrite a key"
        ) from None
    except OSError as exc:
        raise VerifierError(
            Reason.STORAGE, f"cannot write the key file {path}: {exc.strerror or exc}"
        ) from None


def write_signing_key(
    path: str | Path, key: nacl.signing.SigningKey, *, overwrite: bool = False
) -> None:
    """Write ``key`` as a signing key file (mode 0600). Without ``overwrite`` an existing
    file is refused, even one that appears while this runs."""
    path = Path(path)
    if not overwrite and path.exists():
        raise VerifierError(Reason.MALFORMED, f"{path} exists; refusing to overwrite a key")
    _write(path, _dump(signing_jwk(key)), mode=0o600, exclusive=not overwrite)


def write_public_key(path: str | Path, key: nacl.signing.VerifyKey) -> None:
    """Write the public JWK (mode 0644: it is meant to be handed out)."""
    _write(Path(path), _dump(public_jwk(key)), mode=0o644, exclusive=False)


def _read(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise VerifierError(
            Reason.STORAGE, f"cannot read the key file {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > _MAX_KEY_FILE:
        raise VerifierError(Reason.MALFORMED, f"{path}: not a key file (too large)")
    return data


def _jwk(text: str) -> dict[str, Any]:
    jwk = json.loads(text)
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an OKP/Ed25519 JWK")
    return jwk


def _signing_from_jwk(jwk: dict[str, Any]) -> nacl.signing.SigningKey:
    key = nacl.signing.SigningKey(b64url_text(str(jwk["d"]), "d"))
    if "x" in jwk and b64url_text(str(jwk["x"]), "x") != bytes(key.verify_key):
        raise ValueError("x does not match d")
    return key


# RecursionError: JSON nested thousands deep fits in the 64 KiB bound and overflows the stack.
_KEY_ERRORS = (
    ValueError,
    KeyError,
    RecursionError,
    VerifierError,
    nacl.exceptions.CryptoError,
)


def load_signing_key(path: str | Path) -> nacl.signing.SigningKey:
    """Read a signing key file written by :func:`write_signing_key` (``verifier keygen``)."""
    raw = _read(path)
    try:
        return _signing_from_jwk(_jwk(raw.decode("utf-8")))
    except (*_KEY_ERRORS, UnicodeDecodeError) as exc:
        raise VerifierError(
            Reason.MALFORMED, f"{path}: not a revocation signing key ({exc})"
        ) from None


def load_verify_key(path: str | Path) -> nacl.signing.VerifyKey:
    """Read a public key: a public or signing JWK, or bare base64url / hex of 32 bytes."""
    text = _read(path).decode("utf-8", "replace").strip()
    try:
        if text.startswith("{"):
            jwk = _jwk(text)
            if "d" in jwk:
                return _signing_from_jwk(jwk).verify_key
            public = b64url_text(str(jwk["x"]), "x")
        elif len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            public = bytes.fromhex(text)
        else:
            public = b64url_text(text, "public key")
        if len(public) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return nacl.signing.VerifyKey(public)
    except _KEY_ERRORS as exc:
        raise VerifierError(
            Reason.MALFORMED, f"{path}: not an Ed25519 public key ({exc})"
        ) from None
