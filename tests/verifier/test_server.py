"""The reference relying-party HTTP service, driven by a real devicebio device.

Everything is real: the device's vault and keys, the verifier, SQLite, the signed revocation
list; requests go through Starlette's TestClient (httpx), and one test runs a real uvicorn
server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the server needs the [server] extra")
pytest.importorskip("httpx", reason="the server tests need httpx")

import httpx
import nacl.signing

with warnings.catch_warnings():
    # Starlette >= 1.x prefers the httpx2 fork for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

from verifier import cli
from verifier.errors import Reason, VerifierError
from verifier.policy import Policy
from verifier.revocation import parse_revocation_list
from verifier.server import create_app, serve_in_thread

RP_ID = "example.com"
ORIGIN = "https://example.com"
TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Device:
    """A real devicebio credential store in a real vault, as the app would hold it."""

    def __init__(self, path: Path) -> None:
        from devicebio.hazmat.credentials import Credentials
        from devicebio.store.vault import RawKey, Vault

        self.creds = Credentials(Vault.create(path, RawKey(b"\x0b" * 32)))

    @staticmethod
    def uv(method: str, liveness: bool = True, challenge: bytes = b"\x02") -> Any:
        from devicebio.hazmat.credentials import UserVerification
        from devicebio.protocol import LivenessClaim, Method, liveness_plan, liveness_sequence_hash

        # The liveness claim is bound to the challenge's prompt sequence, as the device's is.
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
            verification=self.uv("face", challenge=challenge),
        )
        return reg.to_json()  # type: ignore[no-any-return]

    def sign(self, challenge: bytes, method: str, liveness: bool = True) -> dict[str, Any]:
        asr = self.creds.authenticate(
            rp_id=RP_ID,
            origin=ORIGIN,
            challenge=challenge,
            verification=self.uv(method, liveness, challenge),
        )
        return asr.to_json()  # type: ignore[no-any-return]


@pytest.fixture
def key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "rl-key.json"
    assert cli.main(["keygen", "--out", str(path)]) == 0  # the operator's real key file
    capsys.readouterr()
    return path


@pytest.fixture
def client(tmp_path: Path, key_file: Path) -> Iterator[TestClient]:
    app = create_app(
        db=tmp_path / "verifier.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=key_file,
        admin_token=TOKEN,
    )
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def _challenge(client: TestClient, purpose: str, user: str = "alice", **kw: Any) -> bytes:
    r = client.post("/challenge", json={"user": user, "purpose": purpose}, **kw)
    assert r.status_code == 200, r.text
    body = r.json()
    # a register challenge asked for without the admin token is a sign-up challenge
    kinds = {purpose, "sign_up"} if purpose == "register" and "headers" not in kw else {purpose}
    assert body["ok"] is True and body["purpose"] in kinds and body["rp_id"] == RP_ID
    assert body["expires_at"] > time.time()
    return _b64d(body["challenge"])


def _register(client: TestClient, device: _Device, user: str = "alice") -> dict[str, Any]:
    value = _challenge(client, "register", user, headers=AUTH)
    r = client.post(
        "/register",
        json={
            "user": user,
            "challenge": _b64url(value),
            "credential": device.register(value, user),
        },
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(client: TestClient, device: _Device, method: str, liveness: bool = True) -> Any:
    value = _challenge(client, "authenticate")
    return {"challenge": _b64url(value), "credential": device.sign(value, method, liveness)}


def test_register_verify_replay_revoke(client: TestClient, tmp_path: Path) -> None:
    device = _Device(tmp_path / "profile")

    # Enrolment is something the RP authorises: no token, no register challenge.
    r = client.post("/challenge", json={"user": "alice", "purpose": "register"})
    assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")

    reg = _register(client, device)
    assert reg["ok"] is True and reg["user"] == "alice" and reg["method"] == "face"
    assert reg["assurance"] == "moderate" and len(bytes.fromhex(reg["device_id"])) == 16

    # PIN: accepted, but this RP marks it weaker and says so.
    body = _signed(client, device, "pin")
    r = client.post("/verify", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["ok"] is True and out["user"] == "alice"
    assert out["method"] == "pin" and out["assurance"] == "weaker"
    assert out["policy"]["assurance"]["pin"] == "weaker"
    assert out["step_up_required"] is True and out["revocation_checked"] is True
    assert out["liveness"]["kind"] == "none" and out["model"] is None
    assert out["sign_count"] == 1 and out["credential_id"] == reg["credential_id"]
    assert out["decision"].startswith("accepted with reduced assurance: PIN only = weaker")
    # no liveness kind is strong by default (issue 13): only the security key steps up
    assert "step up (a security key)" in out["decision"]
    assert r.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in r.headers  # no CORS unless the RP adds it

    # The very same request again: its challenge is spent.
    r = client.post("/verify", json=body)
    assert r.status_code == 403
    out = r.json()
    assert out["ok"] is False and out["reason"] == "challenge_reused"
    assert out["decision"].startswith("refused: challenge_reused")

    # Face with active-only liveness: moderate by default (steered screen replays beat it).
    r = client.post("/verify", json=_signed(client, device, "face"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["assurance"] == "moderate" and out["step_up_required"] is True
    assert out["decision"].startswith(
        "accepted with reduced assurance: face with liveness (active-challenge) = moderate"
    )
    assert out["liveness"]["passed"] is True and out["sign_count"] == 2

    # The caller may tighten the policy for one request, and the refusal says why.
    body = {**_signed(client, device, "face", liveness=False), "require_liveness": True}
    r = client.post("/verify", json=body)
    assert r.status_code == 403 and r.json()["reason"] == "policy_liveness_required"
    assert r.json()["policy"]["require_liveness"] is True
    r = client.post("/verify", json=_signed(client, device, "face", liveness=False))
    assert r.status_code == 200 and r.json()["assurance"] == "moderate"
    assert r.json()["decision"].startswith(
        "accepted with reduced assurance: face, no liveness = moderate; step up"
    )

    # Revocation is an admin act: no token or a wrong one is 401, before the body is read.
    revoke = {"credential_id": reg["credential_id"], "reason": "user_requested"}
    assert client.post("/revoke", json=revoke).status_code == 401
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
    r = client.post("/revoke", json=revoke, headers=wrong)
    assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
    assert client.post("/revoke", content=b"junk", headers=wrong).status_code == 401
    before = client.get("/revocation").json()["serial"]

    r = client.post("/revoke", json=revoke, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["changed"] is True and out["serial"] == before + 1
    assert [(e["kind"], e["value"]) for e in out["list"]["entries"]] == [
        ("credential_id", reg["credential_id"])
    ]
    # Idempotent for a retrying admin.
    again = client.post("/revoke", json=revoke, headers=AUTH).json()
    assert again["changed"] is False and again["serial"] == out["serial"]

    # Anyone can fetch the signed list and check it with the published key.
    pub = client.get("/revocation").json()
    key = nacl.signing.VerifyKey(_b64d(pub["issuer_public_key"]))
    rl = parse_revocation_list(_b64d(pub["signed"]), key)
    assert rl.serial == out["serial"] and rl.entries[0].value == _b64d(reg["credential_id"])

    r = client.post("/verify", json=_signed(client, device, "face"))
    assert r.status_code == 403
    out = r.json()
    assert out["reason"] == "revoked" and out["decision"].startswith("refused: revoked")


def test_request_hygiene(client: TestClient) -> None:
    def post(path: str, content: bytes | Any, ctype: str = "application/json") -> httpx.Response:
        return client.post(path, content=content, headers={"Content-Type": ctype})

    bad_json = post("/challenge", b'{"user": "alice", "purpose": ')
    assert bad_json.status_code == 400 and bad_json.json()["reason"] == "malformed"
    assert post("/challenge", b"[1, 2]").status_code == 400
    assert post("/challenge", b'{"user": "a", "user": "b", "purpose": "register"}').status_code == (
        400
    )
    assert post("/challenge", b'{"user": "a", "purpose": "register", "x": 1}').status_code == 400
    assert post("/challenge", b'{"user": "a", "purpose": "login"}').status_code == 400
    assert post("/challenge", b'{"user": "", "purpose": "authenticate"}').status_code == 400
    assert post("/verify", b'{"challenge": "***", "credential": {}}').status_code == 400
    assert post("/verify", b'{"challenge": NaN, "credential": {}}').status_code == 400
    assert post("/verify", b"[" * 50_000).status_code == 400  # deep nesting, within the limit
    assert post("/challenge", b"\xff\xfe{}").status_code == 400

    big = json.dumps({"user": "a" * 70_000, "purpose": "authenticate"}).encode()
    r = post("/challenge", big)
    assert r.status_code == 413 and r.json()["reason"] == "payload_too_large"

    # Chunked, no Content-Length: the limit is counted as the body streams in.
    def chunks() -> Iterator[bytes]:
        yield b'{"user": "'
        for _ in range(40):
            yield b"a" * 4096
        yield b'", "purpose": "authenticate"}'

    r = client.post("/challenge", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    ok = b'{"user": "alice", "purpose": "authenticate"}'
    r = post("/challenge", ok, "text/plain")
    assert r.status_code == 415 and r.json()["reason"] == "unsupported_media_type"
    assert post("/challenge", ok, "application/x-www-form-urlencoded").status_code == 415
    assert post("/challenge", ok, "application/json; charset=latin-1").status_code == 415
    assert post("/challenge", ok, "application/json; charset=utf-8").status_code == 200

    r = client.get("/verify")
    assert r.status_code == 405 and r.json()["reason"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["ok"] is False

    # A malformed credential burns its challenge and is refused as malformed.
    value = _challenge(client, "authenticate")
    r = client.post("/verify", json={"challenge": _b64url(value), "credential": {"id": 1}})
    assert r.status_code == 400 and r.json()["decision"].startswith("refused: malformed")

    health = client.get("/healthz").json()
    assert health == {"ok": True, "rp_id": RP_ID, "revocation": "enforced", "revocation_serial": 1}


def test_storage_failure_is_503_without_details(tmp_path: Path, key_file: Path) -> None:
    app = create_app(db=tmp_path / "v.db", rp_id=RP_ID, origin=ORIGIN, revocation_key_file=key_file)
    client = TestClient(app)
    app.state.store.close()  # the database goes away under a running service
    r = client.post("/challenge", json={"user": "alice", "purpose": "authenticate"})
    assert r.status_code == 503
    assert r.json() == {
        "ok": False,
        "reason": "storage",
        "message": "verifier storage is unavailable; try again later",
    }


def test_open_registration_and_duplicate_user(tmp_path: Path) -> None:
    app = create_app(
        db=tmp_path / "v.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=None,
        admin_token=TOKEN,
        open_registration=True,
        policy=Policy(require_liveness=True),
    )
    device = _Device(tmp_path / "profile")
    with TestClient(app) as client:
        # Sign-up is open for a new user...
        value = _challenge(client, "register")
        r = client.post(
            "/register",
            json={
                "user": "alice",
                "challenge": _b64url(value),
                "credential": device.register(value),
            },
        )
        assert r.status_code == 200, r.text
        # ...but adding a device to an enrolled user needs the RP's say-so.
        r = client.post("/challenge", json={"user": "alice", "purpose": "register"})
        assert r.status_code == 409 and r.json()["reason"] == "user_exists"
        _challenge(client, "register", headers=AUTH)

        # Revocation off: no list, no admin endpoint, and the answer says it was not checked.
        assert client.get("/revocation").status_code == 404
        assert client.post("/revoke", json={}, headers=AUTH).status_code == 404
        r = client.post("/verify", json=_signed(client, device, "face"))
        assert r.status_code == 200 and r.json()["revocation_checked"] is False
        # The RP's own policy (liveness required) holds even when the caller does not ask.
        r = client.post("/verify", json=_signed(client, device, "face", liveness=False))
        assert r.status_code == 403 and r.json()["reason"] == "policy_liveness_required"
        assert r.json()["policy"]["require_liveness"] is True


def test_list_is_renewed_before_it_goes_stale(tmp_path: Path, key_file: Path) -> None:
    now = [time.time()]
    app = create_app(
        db=tmp_path / "v.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=key_file,
        revocation_validity_days=2,
        admin_token=TOKEN,
        clock=lambda: now[0],
    )
    device = _Device(tmp_path / "profile")
    with TestClient(app) as client:
        assert client.get("/revocation").json()["serial"] == 1
        _register(client, device)
        now[0] += 1.5 * 86_400  # past half the validity: the next verify re-signs first
        r = client.post("/verify", json=_signed(client, device, "pin"))
        assert r.status_code == 200, r.text
        listed = client.get("/revocation").json()
        assert listed["serial"] == 2 and listed["list"]["next_update"] > now[0] + 86_400


def test_startup_refuses_bad_configuration(tmp_path: Path, key_file: Path) -> None:
    db = tmp_path / "v.db"
    create_app(db=db, rp_id=RP_ID, origin=ORIGIN, revocation_key_file=key_file)
    # A list in force that this key did not sign: refuse to start rather than fail later.
    other = tmp_path / "other.json"
    assert cli.main(["keygen", "--out", str(other)]) == 0
    with pytest.raises(VerifierError) as e:
        create_app(db=db, rp_id=RP_ID, origin=ORIGIN, revocation_key_file=other)
    assert e.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE
    with pytest.raises(VerifierError) as e:
        create_app(db=db, rp_id=RP_ID, origin=ORIGIN, revocation_key_file=None, admin_token="x")
    assert e.value.reason is Reason.MALFORMED
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(VerifierError) as e:
        create_app(db=db, rp_id=RP_ID, origin=ORIGIN, revocation_key_file=tmp_path / "junk.json")
    assert e.value.reason is Reason.MALFORMED
    with pytest.raises(VerifierError) as e:
        serve_in_thread(
            create_app(db=db, rp_id=RP_ID, origin=ORIGIN, revocation_key_file=None),
            host="192.0.2.1",
        )  # refused before any bind: loopback only
    assert e.value.reason is Reason.MALFORMED


def test_real_uvicorn_on_loopback(tmp_path: Path, key_file: Path) -> None:
    pytest.importorskip("uvicorn", reason="serving needs the [server] extra")
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(
        db=tmp_path / "v.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=key_file,
        admin_token=TOKEN,
    )
    device = _Device(tmp_path / "profile")
    started = time.monotonic()
    server = serve_in_thread(app, host="127.0.0.1", port=0, startup_timeout=10)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as http:
            r = http.get("/healthz")
            assert r.status_code == 200 and r.json()["ok"] is True
            assert "server" not in r.headers  # no version banner
            r = http.post("/challenge", json={"user": "alice", "purpose": "authenticate"})
            assert r.status_code == 200 and len(_b64d(r.json()["challenge"])) == 32

            # One registration and one assertion, the assertion raced from 6 connections:
            # the shared store must let exactly one through.
            r = http.post("/challenge", json={"user": "alice", "purpose": "register"}, headers=AUTH)
            value = _b64d(r.json()["challenge"])
            reg = {
                "user": "alice",
                "challenge": _b64url(value),
                "credential": device.register(value),
            }
            assert http.post("/register", json=reg).status_code == 200
            r = http.post("/challenge", json={"user": "alice", "purpose": "authenticate"})
            value = _b64d(r.json()["challenge"])
            body = {"challenge": _b64url(value), "credential": device.sign(value, "face")}

            def attempt(_: int) -> tuple[int, str | None]:
                with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as c:
                    resp = c.post("/verify", json=body)
                    return resp.status_code, resp.json().get("reason")

            with ThreadPoolExecutor(6) as pool:
                results = sorted(pool.map(attempt, range(6)), key=lambda x: x[0])
            assert results[0] == (200, None)
            assert results[1:] == [(403, "challenge_reused")] * 5
    finally:
        server.close(timeout=10)
    assert not server._thread.is_alive()
    assert time.monotonic() - started < 60


def _cli(*args: str | Path) -> Any:
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "verifier.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=60,
    )


def test_revoke_shares_the_cli_publisher(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/revoke and `verifier revoke` are one publisher: a race lost to a CLI process is
    retried on top of its list, and a duplicate from either side is a no-op on the other."""
    db = tmp_path / "v.db"
    app = create_app(
        db=db, rp_id=RP_ID, origin=ORIGIN, revocation_key_file=key_file, admin_token=TOKEN
    )
    store = app.state.store
    real = store.set_revocation_state
    installs: list[int] = []

    def racing(serial: int, data: bytes) -> None:
        installs.append(serial)
        if len(installs) == 1:  # another process wins serial 2 just before our install
            r = _cli("revoke", "--db", db, "--key", key_file, "--model-id", "cli-m", "--reason",
                     "revoked")  # fmt: skip
            assert r.returncode == 0, r.stderr
        real(serial, data)

    with TestClient(app) as client:
        monkeypatch.setattr(store, "set_revocation_state", racing)
        r = client.post("/revoke", json={"model_id": "http-m", "reason": "revoked"}, headers=AUTH)
        assert r.status_code == 200, r.text
        out = r.json()
        assert installs == [2, 3] and out["changed"] is True and out["serial"] == 3
        assert [e["value"] for e in out["list"]["entries"]] == ["cli-m", "http-m"]
        monkeypatch.undo()

        # What the CLI revoked, /revoke leaves alone; and the other way round.
        again = {"model_id": "cli-m", "reason": "user_requested"}
        r = client.post("/revoke", json=again, headers=AUTH)
        assert r.status_code == 200 and r.json()["changed"] is False
        assert r.json()["serial"] == 3
        r = _cli("revoke", "--db", db, "--key", key_file, "--model-id", "http-m", "--reason",
                 "revoked", "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["changed"] is False
        assert client.get("/revocation").json()["serial"] == 3


def test_an_early_sign_up_challenge_cannot_take_over_an_account(tmp_path: Path) -> None:
    """The attack, over HTTP: with open registration, the attacker asks for alice's register
    challenge before she signs up, waits until she has, then registers their own device with
    the early challenge. It must be refused, and /verify must never say "alice" for them."""
    app = create_app(
        db=tmp_path / "v.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=None,
        admin_token=TOKEN,
        open_registration=True,
    )
    alice, attacker = _Device(tmp_path / "alice"), _Device(tmp_path / "attacker")
    with TestClient(app) as client:
        early = _challenge(client, "register")  # the attacker's, before alice exists
        mine = _challenge(client, "register")
        r = client.post(
            "/register",
            json={"user": "alice", "challenge": _b64url(mine), "credential": alice.register(mine)},
        )
        assert r.status_code == 200, r.text
        r = client.post(
            "/register",
            json={
                "user": "alice",
                "challenge": _b64url(early),
                "credential": attacker.register(early),
            },
        )
        assert r.status_code != 200 and r.json()["reason"] == "user_already_registered", r.text
        r = client.post("/verify", json=_signed(client, attacker, "face"))
        assert r.status_code != 200 and r.json()["reason"] == "credential_unknown", r.text
        # The RP itself may still add a device for alice (admin-issued challenge).
        added = _challenge(client, "register", headers=AUTH)
        other = _Device(tmp_path / "second")
        r = client.post(
            "/register",
            json={
                "user": "alice",
                "challenge": _b64url(added),
                "credential": other.register(added),
            },
        )
        assert r.status_code == 200, r.text


def _pay_request(client: TestClient, amount: str, **kw: Any) -> dict[str, Any]:
    body = {
        "user": "alice",
        "payee_name": "School canteen",
        "amount": amount,
        "currency": "EUR",
        "instrument_name": "Student card 0042",
        "instrument_icon": "https://example.com/card.png",
        **kw,
    }
    r = client.post("/pay/request", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _pay_sign(device: _Device, req: dict[str, Any], method: str = "face") -> Any:
    from devicebio.protocol import PaymentDetails

    value = _b64d(req["challenge"])
    return device.creds.authenticate(
        rp_id=RP_ID,
        origin=ORIGIN,
        challenge=value,
        verification=device.uv(method, True, value),
        payment=PaymentDetails.from_json(req["payment"]),
    ).to_json()


def test_merchant_request_verify_receipt_mismatch_replay_step_up(
    client: TestClient, tmp_path: Path
) -> None:
    device = _Device(tmp_path / "vault")
    _register(client, device)
    # creating a request is the merchant's act: the admin token is needed
    r = client.post("/pay/request", json={"user": "alice"})
    assert r.status_code == 401
    req = _pay_request(client, "2.50")
    assert req["purpose"] == "payment" and req["payment"]["total"] == {
        "currency": "EUR",
        "value": "2.50",
    }
    assert req["payment"]["topOrigin"] == ORIGIN and req["payment"]["rpId"] == RP_ID
    signed = _pay_sign(device, req)

    # the same authorisation presented for another request of 25.00: mismatch
    other = _pay_request(client, "25.00")
    r = client.post("/pay/verify", json={"request_id": other["request_id"], "credential": signed})
    assert r.status_code == 403 and r.json()["reason"] == "payment_mismatch", r.text

    r = client.post("/pay/verify", json={"request_id": req["request_id"], "credential": signed})
    assert r.status_code == 200, r.text
    receipt = r.json()["receipt"]
    assert receipt["audit_id"] == req["request_id"] and receipt["amount"] == "2.50"
    assert receipt["method"] == "face" and receipt["assurance"] == "moderate"
    r = client.get(f"/pay/receipt/{req['request_id']}", headers=AUTH)
    assert r.status_code == 200 and r.json()["receipt"] == receipt
    assert client.get(f"/pay/receipt/{req['request_id']}").status_code == 401
    assert client.get("/pay/receipt/nope", headers=AUTH).status_code == 404

    # a replay of the accepted authorisation
    r = client.post("/pay/verify", json={"request_id": req["request_id"], "credential": signed})
    assert r.status_code == 403 and r.json()["reason"] == "challenge_reused"

    # above the face limit: step-up demanded
    big = _pay_request(client, "25.00")
    r = client.post(
        "/pay/verify", json={"request_id": big["request_id"], "credential": _pay_sign(device, big)}
    )
    body = r.json()
    assert r.status_code == 403 and body["reason"] == "amount_above_method_limit", r.text
    assert body["step_up"] is True and "security-key" in body["message"]

    # bad requests are 400, unknown ids 404
    r = client.post(
        "/pay/request",
        json={"user": "alice", "amount": 2.5, "currency": "EUR", "instrument_name": "x",
              "instrument_icon": "https://example.com/i.png", "payee_name": "c"},
        headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 400
    bad = {"request_id": "f" * 32, "credential": signed}
    assert client.post("/pay/verify", json=bad).status_code == 404
