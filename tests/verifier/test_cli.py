"""The `verifier` command run as a real subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from helpers.claims import live_claim

from verifier.challenges import Purpose, consume_challenge
from verifier.errors import Reason, VerifierError
from verifier.revocation import check_not_revoked, parse_revocation_list
from verifier.store import SCHEMA_VERSION, SQLiteStore

REPO = Path(__file__).resolve().parents[2]


def run(
    *args: str | Path, stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", *map(str, args)],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def _b64d(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "verifier.db"


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "rl-key.json"
    r = run("keygen", "--out", path)
    assert r.returncode == 0, r.stderr
    return path, r.stdout.strip()


def test_help_lists_exit_codes() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert "exit codes:" in r.stdout and "3  storage" in r.stdout


def test_no_command_is_usage_error() -> None:
    assert run().returncode == 2


def test_challenge_text_is_usable(db: Path) -> None:
    r = run("challenge", "--db", db, "--user", "alice", "--purpose", "register")
    assert r.returncode == 0, r.stderr
    value = _b64d(r.stdout.strip())
    assert len(value) == 32
    got = consume_challenge(SQLiteStore(db), value, purpose=Purpose.REGISTER, user="alice")
    assert got.user == "alice"


def test_challenge_json_and_ttl(db: Path) -> None:
    r = run(
        "challenge",
        "--db",
        db,
        "--user",
        "bob",
        "--purpose",
        "authenticate",
        "--ttl",
        "60",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["purpose"] == "authenticate" and out["user"] == "bob"
    with pytest.raises(VerifierError) as e:
        consume_challenge(
            SQLiteStore(db),
            _b64d(out["challenge"]),
            purpose=Purpose.AUTHENTICATE,
            now=out["expires_at"] + 1,
        )
    assert e.value.reason is Reason.CHALLENGE_EXPIRED


def test_challenge_usage_errors(db: Path) -> None:
    assert run("challenge", "--db", db, "--user", "a", "--purpose", "nope").returncode == 2
    assert run("challenge", "--user", "a", "--purpose", "register").returncode == 2


def test_storage_errors_exit_3(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    r = run("challenge", "--db", junk, "--user", "a", "--purpose", "register", "--json")
    assert r.returncode == 3
    assert json.loads(r.stdout) == {
        "ok": False,
        "reason": "storage",
        "message": json.loads(r.stdout)["message"],
    }
    r = run("challenge", "--db", tmp_path / "no" / "dir.db", "--user", "a", "--purpose", "register")
    assert r.returncode == 3


def test_schema_mismatch_exit_3(db: Path) -> None:
    import sqlite3

    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()
    assert run("challenge", "--db", db, "--user", "a", "--purpose", "register").returncode == 3


def test_keygen_file_mode_and_public_key(key: tuple[Path, str], tmp_path: Path) -> None:
    path, public = key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    jwk = json.loads(path.read_text())
    sk = nacl.signing.SigningKey(_b64d(jwk["d"]))
    assert _b64d(public) == bytes(sk.verify_key)
    # Never overwrite a key silently.
    r = run("keygen", "--out", path)
    assert r.returncode == 2
    assert json.loads(path.read_text()) == jwk


def test_revoke_show_and_inspect(db: Path, key: tuple[Path, str], tmp_path: Path) -> None:
    path, public = key
    vk = nacl.signing.VerifyKey(_b64d(public))
    out1 = tmp_path / "rl1.cbor"
    r = run(
        "revoke",
        "--db",
        db,
        "--key",
        path,
        "--credential-id",
        "Y3JlZC0x",
        "--reason",
        "user-requested",
        "--out",
        out1,
    )
    assert r.returncode == 0, r.stderr
    rl1 = parse_revocation_list(out1.read_bytes(), vk)
    assert rl1.serial == 1 and len(rl1.entries) == 1

    r = run(
        "revoke",
        "--db",
        db,
        "--key",
        path,
        "--device-id",
        "00" * 16,
        "--reason",
        "USER_KEY_PHYSICAL_COMPROMISE",
        "--next-update-days",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["list"]["serial"] == 2
    assert [e["kind"] for e in out["list"]["entries"]] == ["credential_id", "device_key"]

    r = run(
        "revoke",
        "--db",
        db,
        "--key",
        path,
        "--model-id",
        "bad-model@sha256:00",
        "--reason",
        "user_verification_bypass",
    )
    assert r.returncode == 0, r.stderr

    store = SQLiteStore(db)
    for kw in (
        {"credential_id": b"cred-1"},
        {"device_id": b"\x00" * 16},
        {"model_id": "bad-model@sha256:00"},
    ):
        args = {"credential_id": b"fine", "device_id": None, "model_id": None, **kw}
        with pytest.raises(VerifierError) as e:
            check_not_revoked(store, vk, **args)  # type: ignore[arg-type]
        assert e.value.reason is Reason.REVOKED
    check_not_revoked(store, vk, credential_id=b"fine", device_id=None, model_id=None)

    r = run("revocation", "show", "--db", db, "--json", "--issuer-key", path)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["list"]["serial"] == 3 and shown["signature"] == "valid"
    assert shown["stale"] is False
    r = run("revocation", "show", "--db", db)
    assert r.returncode == 0 and "serial:       3" in r.stdout

    r = run("inspect", out1)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "revocation-list"
    assert info["list"]["entries"][0]["value"] == "Y3JlZC0x"
    assert "not checked" in info["signature"]

    # Installing the old serial-1 list again is a rollback.
    pub = tmp_path / "pub.txt"
    pub.write_text(public + "\n")
    r = run("revocation", "install", "--db", db, "--issuer-key", pub, out1)
    assert r.returncode == 1
    assert "refused: revocation_list_rollback" in r.stderr


def test_revoke_twice_is_a_no_op(db: Path, key: tuple[Path, str], tmp_path: Path) -> None:
    # The one publisher's rule (verifier.revocation.issue): revoking what the list in force
    # already names changes nothing and says so, as the HTTP service's /revoke does.
    path, _ = key
    args = ("revoke", "--db", db, "--key", path, "--sdk-version", "0.0.1", "--reason", "revoked")
    assert run(*args).returncode == 0
    first = SQLiteStore(db).get_revocation_state()
    r = run(*args, "--reason", "user_requested")
    assert r.returncode == 0, r.stderr
    assert "already revoked (revoked) in serial 1; nothing changed" in r.stdout
    assert SQLiteStore(db).get_revocation_state() == first  # nothing signed or installed
    out = tmp_path / "rl.cbor"
    r = run(*args, "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["changed"] is False and body["list"]["serial"] == 1
    assert first is not None and out.read_bytes() == first[1]  # the list in force
    r = run("audit", "--db", db, "--json")
    assert [e["event"] for e in json.loads(r.stdout)["events"]].count("revoked") == 1


def test_revoke_requires_one_target_and_known_reason(db: Path, key: tuple[Path, str]) -> None:
    path, _ = key
    assert run("revoke", "--db", db, "--key", path, "--reason", "revoked").returncode == 2
    assert (
        run(
            "revoke",
            "--db",
            db,
            "--key",
            path,
            "--model-id",
            "m",
            "--device-id",
            "00",
            "--reason",
            "revoked",
        ).returncode
        == 2
    )
    assert (
        run("revoke", "--db", db, "--key", path, "--model-id", "m", "--reason", "bored").returncode
        == 2
    )
    assert (
        run(
            "revoke", "--db", db, "--key", path, "--credential-id", "!!", "--reason", "revoked"
        ).returncode
        == 2
    )


def test_revoke_with_foreign_key_refused(db: Path, key: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = key
    assert (
        run(
            "revoke", "--db", db, "--key", path, "--model-id", "m", "--reason", "revoked"
        ).returncode
        == 0
    )
    other = tmp_path / "other.json"
    assert run("keygen", "--out", other).returncode == 0
    r = run(
        "revoke", "--db", db, "--key", other, "--model-id", "n", "--reason", "revoked", "--json"
    )
    assert r.returncode == 1
    assert json.loads(r.stdout)["reason"] == "revocation_list_bad_signature"


def test_revocation_show_empty(db: Path) -> None:
    r = run("revocation", "show", "--db", db, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["list"] is None


def test_inspect_refuses_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xd2\x84garbage")
    r = run("inspect", junk)
    assert r.returncode == 1 and "refused: malformed" in r.stderr
    r = run("inspect", tmp_path / "missing")
    assert r.returncode == 3


def test_inspect_bad_signature_with_key(db: Path, key: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = key
    out = tmp_path / "rl.cbor"
    assert (
        run(
            "revoke",
            "--db",
            db,
            "--key",
            path,
            "--model-id",
            "m",
            "--reason",
            "revoked",
            "--out",
            out,
        ).returncode
        == 0
    )
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x40
    out.write_bytes(bytes(data))
    r = run("inspect", out, "--issuer-key", path)
    assert r.returncode == 1 and "refused: revocation_list_bad_signature" in r.stderr


# -- inspect of device-made registrations and assertions (real devicebio credentials) ------


@pytest.fixture(scope="module")
def device_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from devicebio.hazmat.credentials import Credentials, UserVerification
    from devicebio.protocol import LivenessClaim, Method
    from devicebio.store.vault import RawKey, Vault

    d = tmp_path_factory.mktemp("device")
    creds = Credentials(Vault.create(d / "profile", RawKey(b"\x07" * 32)))
    uv = UserVerification(
        method=Method.FACE,
        liveness=live_claim(b"r" * 32),
        model="test-model@sha256:0123",
        verified=True,
    )
    origin = "https://login.example.com"
    reg = creds.register(
        rp_id="example.com", origin=origin, challenge=b"r" * 32, user_name="alice", verification=uv
    )
    pin = UserVerification(
        method=Method.PIN, liveness=LivenessClaim.none(), model=None, verified=True
    )
    asr = creds.authenticate(
        rp_id="example.com", origin=origin, challenge=b"a" * 32, verification=pin
    )
    paths = {
        "registration": d / "registration.json",
        "assertion": d / "assertion.json",
        "attestation": d / "attestation.cbor",
    }
    paths["registration"].write_text(json.dumps(reg.to_json()))
    paths["assertion"].write_text(json.dumps(asr.to_json()))
    paths["attestation"].write_bytes(reg.attestation_object)
    return paths


def test_inspect_registration(device_outputs: dict[str, Path]) -> None:
    r = run("inspect", device_outputs["registration"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "registration"
    assert info["clientData"]["type"] == "webauthn.create"
    auth = info["attestationObject"]["authData"]
    assert auth["flags"]["AT"] and auth["flags"]["UV"] and auth["flags"]["ED"]
    assert auth["signCount"] == 0
    ext = auth["extensions"]["devicebio"]
    assert ext["method"] == "face" and ext["liveness"]["passed"] is True
    assert len(bytes.fromhex(ext["device_id"])) == 16
    assert auth["attestedCredentialData"]["credentialId"] == info["id"]


def test_inspect_assertion(device_outputs: dict[str, Path]) -> None:
    r = run("inspect", device_outputs["assertion"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "assertion"
    auth = info["authenticatorData"]
    assert auth["signCount"] == 1
    assert auth["flags"]["UP"] and auth["flags"]["UV"] and not auth["flags"]["AT"]
    assert auth["extensions"]["devicebio"]["method"] == "pin"
    assert auth["extensions"]["devicebio"]["liveness"]["kind"] == "none"


def test_inspect_raw_attestation_object(device_outputs: dict[str, Path], tmp_path: Path) -> None:
    r = run("inspect", device_outputs["attestation"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fmt"] == "packed"
    # The same, as base64url text.
    import base64

    text = base64.urlsafe_b64encode(device_outputs["attestation"].read_bytes()).rstrip(b"=")
    (tmp_path / "att.txt").write_bytes(text)
    r = run("inspect", tmp_path / "att.txt")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["format"] == "attestation-object"


def test_inspect_tampered_assertion_json(device_outputs: dict[str, Path], tmp_path: Path) -> None:
    obj = json.loads(device_outputs["assertion"].read_text())
    obj["response"]["authenticatorData"] = obj["response"]["authenticatorData"][:-4]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(obj))
    r = run("inspect", bad)
    assert r.returncode == 1 and "refused: malformed" in r.stderr


def test_verifier_imports_without_device_stack() -> None:
    code = (
        "import sys, verifier.cli, verifier.store, verifier.challenges, verifier.revocation\n"
        "import verifier.cli.inspect\n"
        "bad = [m for m in ('numpy', 'cv2', 'onnxruntime') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


# -- end to end: device registers and signs, the CLI verifies ------------------------------

RP_ID = "example.com"
ORIGIN = "https://example.com"


class _Device:
    """A real devicebio credential store in a real vault, as the app would hold it."""

    def __init__(self, path: Path) -> None:
        from devicebio.hazmat.credentials import Credentials
        from devicebio.store.vault import RawKey, Vault

        self.creds = Credentials(Vault.create(path, RawKey(b"\x09" * 32)))

    @staticmethod
    def uv(method: str = "face", liveness: bool = True, challenge: bytes = b"\x01") -> Any:
        from devicebio.hazmat.credentials import UserVerification
        from devicebio.protocol import LivenessClaim, Method, liveness_plan, liveness_sequence_hash

        digest = liveness_sequence_hash(challenge, liveness_plan(challenge))
        claim = (
            LivenessClaim(
                kind="active-challenge", passed=liveness, sequence_hash=digest, frames=500
            )
            if method == "face"
            else LivenessClaim.none()
        )
        return UserVerification(
            method=Method(method),
            liveness=claim,
            model="test-model@sha256:0123" if method == "face" else None,
            verified=True,
        )

    def register(self, challenge: bytes, user: str = "alice") -> dict[str, Any]:
        reg = self.creds.register(
            rp_id=RP_ID,
            origin=ORIGIN,
            challenge=challenge,
            user_name=user,
            verification=self.uv(challenge=challenge),
        )
        return reg.to_json()  # type: ignore[no-any-return]

    def sign(self, challenge: bytes, method: str = "face", liveness: bool = True) -> Any:
        return self.creds.authenticate(
            rp_id=RP_ID,
            origin=ORIGIN,
            challenge=challenge,
            verification=self.uv(method, liveness, challenge),
        )


def _challenge(db: Path, purpose: str, user: str = "alice") -> tuple[str, bytes]:
    r = run("challenge", "--db", db, "--user", user, "--purpose", purpose)
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    return text, _b64d(text)


def _register(db: Path, device: _Device) -> dict[str, Any]:
    text, value = _challenge(db, "register")
    reg = device.register(value)
    r = run(
        "register",
        "--db",
        db,
        "--rp-id",
        RP_ID,
        "--origin",
        ORIGIN,
        "--user",
        "alice",
        f"--challenge={text}",
        "--json",
        stdin=json.dumps(reg).encode(),
    )
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _verify(
    db: Path, device: _Device, *extra: str | Path, method: str = "face", liveness: bool = True
) -> subprocess.CompletedProcess[str]:
    text, value = _challenge(db, "authenticate")
    asr = device.sign(value, method, liveness)
    return run(
        "verify",
        "--db",
        db,
        "--rp-id",
        RP_ID,
        "--origin",
        ORIGIN,
        f"--challenge={text}",
        "--json",
        *extra,
        stdin=json.dumps(asr.to_json()).encode(),
    )


def test_end_to_end_register_verify_revoke(db: Path, key: tuple[Path, str], tmp_path: Path) -> None:
    device = _Device(tmp_path / "profile")
    reg = _register(db, device)
    assert reg["ok"] and reg["user"] == "alice" and reg["method"] == "face"

    r = _verify(db, device)
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout)
    assert out["user"] == "alice" and out["sign_count"] == 1 and out["assurance"] == "moderate"

    # Replaying the very same assertion: its challenge is spent.
    text, value = _challenge(db, "authenticate")
    asr = json.dumps(device.sign(value).to_json()).encode()
    args = ("verify", "--db", db, "--rp-id", RP_ID, "--origin", ORIGIN, f"--challenge={text}")
    assert run(*args, stdin=asr).returncode == 0
    r = run(*args, stdin=asr)
    assert r.returncode == 1 and "refused: challenge_reused" in r.stderr

    # Policy from the command line.
    r = _verify(db, device, "--methods", "face", method="pin")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {
        "ok": False,
        "reason": "policy_method_refused",
        "message": json.loads(r.stdout)["message"],
    }
    r = _verify(db, device, "--require-liveness", liveness=False)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "policy_liveness_required"
    assert _verify(db, device, "--methods", "face,nonsense").returncode == 2

    # Revocation: required once --issuer-key is given; then the device id is revoked.
    path, public = key
    pub = tmp_path / "issuer.pub"
    pub.write_text(public)  # the public key alone, as `keygen` printed it
    r = _verify(db, device, "--issuer-key", pub)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "revocation_list_missing"
    assert (
        run(
            "revoke", "--db", db, "--key", path, "--model-id", "other", "--reason", "revoked"
        ).returncode
        == 0
    )
    r = _verify(db, device, "--issuer-key", pub)
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["revocation_checked"] is True
    assert (
        run(
            "revoke",
            "--db",
            db,
            "--key",
            path,
            "--device-id",
            reg["device_id"],
            "--reason",
            "user_requested",
        ).returncode
        == 0
    )
    r = _verify(db, device, "--issuer-key", pub)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "revoked"
    # ... and the revoked device cannot come back under a new credential
    text, value = _challenge(db, "register")
    again = json.dumps(device.register(value)).encode()
    args = ("register", "--db", db, "--rp-id", RP_ID, "--origin", ORIGIN, "--user", "alice")
    r = run(*args, f"--challenge={text}", "--json", "--issuer-key", pub, stdin=again)
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "revoked", r.stdout


def test_register_refusals(db: Path, tmp_path: Path) -> None:
    device = _Device(tmp_path / "profile")
    text, value = _challenge(db, "register")
    reg = json.dumps(device.register(value)).encode()
    r = run(
        "register",
        "--db",
        db,
        "--rp-id",
        RP_ID,
        "--origin",
        "https://evil.example",
        "--user",
        "alice",
        f"--challenge={text}",
        stdin=reg,
    )
    assert r.returncode == 1 and "refused: origin_mismatch" in r.stderr
    r = run(
        "register",
        "--db",
        db,
        "--rp-id",
        RP_ID,
        "--origin",
        ORIGIN,
        "--user",
        "alice",
        "--challenge",
        "not base64!",
        stdin=reg,
    )
    assert r.returncode == 2
    r = run(
        "register",
        "--db",
        db,
        "--rp-id",
        RP_ID,
        "--origin",
        ORIGIN,
        "--user",
        "alice",
        f"--challenge={_challenge(db, 'register')[0]}",
        stdin=b"{not json",
    )
    assert r.returncode == 1 and "refused: malformed" in r.stderr
    regfile = tmp_path / "reg.json"
    regfile.write_bytes(reg)
    text2, _ = _challenge(db, "register")
    r = run(
        "register",
        "--db",
        db,
        "--rp-id",
        RP_ID,
        "--origin",
        ORIGIN,
        "--user",
        "alice",
        f"--challenge={text2}",
        "--file",
        regfile,
    )
    assert r.returncode == 1 and "refused: challenge_mismatch" in r.stderr


def test_purge_and_audit(db: Path, key: tuple[Path, str]) -> None:
    assert (
        run(
            "challenge", "--db", db, "--user", "a", "--purpose", "register", "--ttl", "0.001"
        ).returncode
        == 0
    )
    import time

    time.sleep(0.01)
    r = run("purge", "--db", db, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["removed"] == 1
    path, _ = key
    assert (
        run(
            "revoke", "--db", db, "--key", path, "--model-id", "m", "--reason", "revoked"
        ).returncode
        == 0
    )
    r = run("audit", "--db", db, "--json")
    assert r.returncode == 0
    events = [e["event"] for e in json.loads(r.stdout)["events"]]
    assert events == ["revocation_list_installed", "revoked"]
    assert run("audit", "--db", db, "--limit", "0").returncode == 2


def test_concurrent_revokes_lose_no_entry(db: Path, key: tuple[Path, str]) -> None:
    path, public = key
    SQLiteStore(db).close()  # create the schema before the race
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "verifier.cli",
                "revoke",
                "--db",
                str(db),
                "--key",
                str(path),
                "--model-id",
                f"model-{i}",
                "--reason",
                "revoked",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    state = SQLiteStore(db).get_revocation_state()
    assert state is not None
    rl = parse_revocation_list(state[1], nacl.signing.VerifyKey(_b64d(public)))
    assert rl.serial == 3
    assert sorted(str(e.value) for e in rl.entries) == ["model-0", "model-1", "model-2"]


def test_challenge_ttl_bounds(db: Path) -> None:
    for ttl in ("0", "-1", "inf", "nan", "1e9"):
        r = run("challenge", "--db", db, "--user", "a", "--purpose", "register", "--ttl", ttl)
        assert r.returncode == 2, (ttl, r.stderr)


# -- the one publisher, from the command line (verifier.revocation.issue.publish) ----------


def test_revoke_retries_a_lost_race_on_top_of_the_winner(
    db: Path,
    key: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`verifier revoke` loses the race for serial 2 to another `verifier revoke` process,
    deterministically: that process runs just before our install reaches the database."""
    from verifier import cli

    path, public = key
    args = ("--db", db, "--key", path, "--reason", "revoked")
    assert run("revoke", *args, "--model-id", "first").returncode == 0
    real = SQLiteStore.set_revocation_state
    installs: list[int] = []

    def racing(self: SQLiteStore, serial: int, data: bytes) -> None:
        installs.append(serial)
        if len(installs) == 1:
            r = run("revoke", *args, "--model-id", "racer")
            assert r.returncode == 0, r.stderr
        real(self, serial, data)

    monkeypatch.setattr(SQLiteStore, "set_revocation_state", racing)
    ours = ["--model-id", "ours", "--reason", "revoked", "--json"]
    code = cli.main(["revoke", "--db", str(db), "--key", str(path), *ours])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["changed"] is True
    assert installs == [2, 3]  # lost serial 2 to the racer, rebuilt on top of it
    assert out["list"]["serial"] == 3
    assert [e["value"] for e in out["list"]["entries"]] == ["first", "racer", "ours"]
    monkeypatch.undo()
    state = SQLiteStore(db).get_revocation_state()
    assert state is not None
    rl = parse_revocation_list(state[1], nacl.signing.VerifyKey(_b64d(public)))
    assert rl.serial == 3 and len(rl.entries) == 3


# -- hostile inputs: each command answers with its typed refusal, never a traceback ----------


def _nested_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    "payload",
    [
        _nested_object(100_000),
        b'{"id":"AA","response":{"signature":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["object", "array-in-assertion"],
)
def test_inspect_refuses_deeply_nested_json_typed(tmp_path: Path, payload: bytes) -> None:
    # The attack: JSON nested past Python's recursion limit made `inspect` die with a
    # RecursionError traceback instead of its typed refusal.
    hostile = tmp_path / "nested.json"
    hostile.write_bytes(payload)
    r = run("inspect", hostile)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("refused: malformed"), r.stderr
    assert "Traceback" not in r.stderr


def test_key_files_refuse_deeply_nested_json_typed(db: Path, tmp_path: Path) -> None:
    # A key file is read before anything else: under its 64 KiB bound JSON can still nest
    # 10,000 deep, which overflowed the JWK reader.
    hostile = tmp_path / "key.json"
    hostile.write_bytes(_nested_object(10_000))
    listing = tmp_path / "list.cbor"
    listing.write_bytes(b"\xd2")
    for args in (
        ("inspect", listing, "--issuer-key", hostile),
        ("revocation", "install", "--db", db, "--issuer-key", hostile, listing),
        ("revocation", "publish", "--db", db, "--key", hostile),
    ):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("verifier: usage:"), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_inputs_are_read_within_a_bound(tmp_path: Path) -> None:
    # An endless input (a FIFO, /dev/zero, a huge sparse file) must not be read into memory
    # whole: past the bound the command refuses.
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    r = run("inspect", huge)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("refused: malformed") and "larger than" in r.stderr, r.stderr
    r = run("inspect", tmp_path)  # a directory: the I/O exit code, not a traceback
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr


def test_serve_payment_policy_flags() -> None:
    from verifier.cli._common import UsageError
    from verifier.cli.main import build_parser
    from verifier.cli.serve import _payment_policy
    from verifier.payment import PaymentPolicy

    base = [
        "serve",
        "--db",
        "v.db",
        "--rp-id",
        "canteen.example",
        "--origin",
        "https://canteen.example",
    ]
    assert _payment_policy(build_parser().parse_args(base)) == PaymentPolicy()
    args = build_parser().parse_args(
        [*base, "--pay-face-limit", "10.00", "--pay-pin-limit", "none", "--pay-daily-limit",
         "none", "--pay-currency", "JPY", "--pay-key-limit", "5000"]
    )  # fmt: skip
    assert _payment_policy(args) == PaymentPolicy(
        currency="JPY", face_with_liveness="10.00", pin=None, security_key="5000",
        daily_limit=None,
    )  # fmt: skip
    with pytest.raises(UsageError):
        _payment_policy(build_parser().parse_args([*base, "--pay-pin-limit", "5,00"]))
