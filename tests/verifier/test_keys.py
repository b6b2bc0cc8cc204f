"""The one key-file format (verifier.keys), as `verifier keygen` writes it and both the CLI
and the HTTP service read it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import nacl.signing
import pytest

from verifier import keys
from verifier.errors import Reason, VerifierError

KEY = nacl.signing.SigningKey(b"\x66" * 32)


def test_signing_key_round_trip_mode_and_no_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "rl-key.json"
    keys.write_signing_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    jwk = json.loads(path.read_text())
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["use"] == "sig"
    assert jwk["devicebio"] == keys.KEY_FILE_KIND
    assert bytes(keys.load_signing_key(path)) == bytes(KEY)
    assert bytes(keys.load_verify_key(path)) == bytes(KEY.verify_key)  # private file works too
    other = nacl.signing.SigningKey(b"\x67" * 32)
    with pytest.raises(VerifierError) as e:
        keys.write_signing_key(path, other)
    assert e.value.reason is Reason.MALFORMED and "refusing to overwrite" in str(e.value)
    assert bytes(keys.load_signing_key(path)) == bytes(KEY)
    keys.write_signing_key(path, other, overwrite=True)
    assert bytes(keys.load_signing_key(path)) == bytes(other)
    assert [p.name for p in tmp_path.iterdir()] == ["rl-key.json"]  # no temp files left


def test_public_key_forms(tmp_path: Path) -> None:
    jwk = tmp_path / "pub.json"
    keys.write_public_key(jwk, KEY.verify_key)
    assert stat.S_IMODE(jwk.stat().st_mode) == 0o644
    assert "d" not in json.loads(jwk.read_text())
    b64 = tmp_path / "pub.txt"
    b64.write_text(keys.public_jwk(KEY.verify_key)["x"] + "\n")
    hexed = tmp_path / "pub.hex"
    hexed.write_text(bytes(KEY.verify_key).hex())
    for path in (jwk, b64, hexed):
        assert bytes(keys.load_verify_key(path)) == bytes(KEY.verify_key), path


@pytest.mark.parametrize(
    "content",
    [
        b"{}",
        b"not json",
        b'{"kty": "OKP", "crv": "X25519", "d": "AAAA"}',
        b'{"kty": "OKP", "crv": "Ed25519"}',
        b'{"kty": "OKP", "crv": "Ed25519", "d": "!!"}',
        b'{"kty": "OKP", "crv": "Ed25519", "d": "AAAA"}',  # 3 bytes, not a 32-byte seed
        b"\xff\xfe",
        b" " * (65 * 1024),
    ],
)
def test_bad_signing_key_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(content)
    with pytest.raises(VerifierError) as e:
        keys.load_signing_key(path)
    assert e.value.reason is Reason.MALFORMED


def test_mismatched_x_and_short_public_key(tmp_path: Path) -> None:
    jwk = keys.signing_jwk(KEY)
    jwk["x"] = keys.public_jwk(nacl.signing.SigningKey(b"\x01" * 32).verify_key)["x"]
    path = tmp_path / "k.json"
    path.write_text(json.dumps(jwk))
    with pytest.raises(VerifierError) as e:
        keys.load_signing_key(path)
    assert e.value.reason is Reason.MALFORMED and "x does not match d" in str(e.value)
    short = tmp_path / "short.txt"
    short.write_text("AAAA")
    with pytest.raises(VerifierError) as e:
        keys.load_verify_key(short)
    assert e.value.reason is Reason.MALFORMED


def test_unreadable_and_unwritable_are_storage(tmp_path: Path) -> None:
    with pytest.raises(VerifierError) as e:
        keys.load_signing_key(tmp_path / "missing.json")
    assert e.value.reason is Reason.STORAGE
    with pytest.raises(VerifierError) as e:
        keys.write_signing_key(tmp_path / "no" / "dir" / "k.json", KEY)
    assert e.value.reason is Reason.STORAGE
