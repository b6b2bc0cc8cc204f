"""Correctness under load, over real HTTP against ``verifier serve --workers N`` processes.

Everything is real: the devicebio device and its vault, ``verifier serve`` as a subprocess
with uvicorn's worker processes, SQLite files, a real PostgreSQL server. The outcomes checked
never depend on timing: whatever the interleaving, one assertion is accepted at most once,
counters only move up, and whatever was answered "accepted" is in the database.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the server needs the [server] extra")
pytest.importorskip("uvicorn", reason="the server needs the [server] extra")

from devicebio.protocol import b64url_encode
from verifier import Purpose, issue_challenge, verify_registration
from verifier.store import open_store

RP_ID = "example.com"
ORIGIN = "https://example.com"
ROOT = Path(__file__).resolve().parents[2]


class _Device:
    """One real devicebio vault holding one credential per user."""

    def __init__(self, path: Path) -> None:
        from devicebio.hazmat.credentials import Credentials
        from devicebio.store.vault import RawKey, Vault

        self.creds = Credentials(Vault.create(path, RawKey(b"\x0c" * 32)))
        self.ids: dict[str, bytes] = {}

    @staticmethod
    def uv(challenge: bytes) -> Any:
        from devicebio.hazmat.credentials import UserVerification
        from devicebio.protocol import LivenessClaim, Method, liveness_plan, liveness_sequence_hash

        digest = liveness_sequence_hash(challenge, liveness_plan(challenge))
        return UserVerification(
            method=Method.FACE,
            liveness=LivenessClaim(
                kind="active-challenge", passed=True, sequence_hash=digest, frames=500
            ),
            model="test-model@sha256:0123",
            verified=True,
        )

    def enrol(self, url: str, users: list[str]) -> None:
        store = open_store(url)
        try:
            for user in users:
                ch = issue_challenge(store, user=user, purpose=Purpose.REGISTER).value
                reg = self.creds.register(
                    rp_id=RP_ID,
                    origin=ORIGIN,
                    challenge=ch,
                    user_name=user,
                    verification=self.uv(ch),
                )
                verify_registration(
                    credential=reg.to_json(),
                    expected_challenge=ch,
                    expected_origin=ORIGIN,
                    expected_rp_id=RP_ID,
                    store=store,
                    user=user,
                )
                self.ids[user] = reg.credential_id
        finally:
            store.close()

    def assertions(self, url: str, user: str, n: int) -> list[tuple[bytes, int, bytes]]:
        """``n`` signed requests for ``user`` with counters in order: (challenge, count, body)."""
        store = open_store(url)
        out = []
        try:
            for _ in range(n):
                ch = issue_challenge(store, user=user, purpose=Purpose.AUTHENTICATE).value
                a = self.creds.authenticate(
                    rp_id=RP_ID,
                    origin=ORIGIN,
                    challenge=ch,
                    verification=self.uv(ch),
                    credential_id=self.ids[user],
                )
                body = json.dumps({"challenge": b64url_encode(ch), "credential": a.to_json()})
                out.append((ch, a.sign_count, body.encode()))
        finally:
            store.close()
        return out


class _Server:
    """``verifier serve`` in a subprocess (its own session, so it can be killed whole)."""

    def __init__(self, url: str, workers: int) -> None:
        cmd = [sys.executable, "-m", "verifier.cli", "serve", "--db", url, "--rp-id", RP_ID]
        cmd += ["--origin", ORIGIN, "--workers", str(workers), "--json"]
        # Every client here is 127.0.0.1: lift the per-address rate limit (it is proved in
        # test_server_limits), or this would measure the limiter, not the verifier.
        cmd += ["--rate", "1000000", "--burst", "1000000", "--limit-concurrency", "10000"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"verifier serve exited {self.proc.wait()}"
        self.host, port = json.loads(line)["url"].removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.workers = workers
        deadline = time.monotonic() + 120
        while len(self.worker_pids()) < workers or not self._healthy():
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)

    def _healthy(self) -> bool:
        try:
            status, _ = self.post("/healthz", None)
        except OSError:
            return False
        return status == 200

    def worker_pids(self) -> list[int]:
        """The supervisor's spawned worker processes (not multiprocessing's resource tracker)."""
        if self.workers == 1:
            return [self.proc.pid]
        pids = []
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in path.read_text().split():
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"spawn_main" in cmdline:
                    pids.append(int(pid))
        return pids

    def post(
        self, path: str, body: bytes | None, conn: http.client.HTTPConnection | None = None
    ) -> tuple[int, dict[str, Any]]:
        own = conn is None
        c = conn or http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            if body is None:
                c.request("GET", path)
            else:
                c.request("POST", path, body, {"Content-Type": "application/json"})
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            if own:
                c.close()

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def serve(backend: Any) -> Iterator[Any]:
    started: list[_Server] = []

    def start(workers: int = 2) -> _Server:
        s = _Server(backend.url, workers)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def _race(server: _Server, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    """Send each body from its own thread, all released together by a barrier."""
    barrier = threading.Barrier(len(bodies))
    results: list[Any] = [None] * len(bodies)

    def one(i: int) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        conn.connect()  # connected before the barrier: the requests start together
        barrier.wait()
        try:
            results[i] = server.post("/verify", bodies[i], conn)
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in results)
    return results


def test_one_assertion_raced_from_many_clients_is_accepted_once(
    backend: Any, serve: Any, tmp_path: Path
) -> None:
    device = _Device(tmp_path / "vault")
    device.enrol(backend.url, ["alice"])
    [(_, count, body)] = device.assertions(backend.url, "alice", 1)
    server = serve(workers=2)
    results = _race(server, [body] * 16)
    accepted = [r for s, r in results if s == 200]
    assert len(accepted) == 1 and accepted[0]["sign_count"] == count
    assert {(s, r["reason"]) for s, r in results if s != 200} == {(403, "challenge_reused")}
    with open_store(backend.url) as store:
        events = [f for _, e, f in store.audit_events(100) if e == "assertion_verified"]
        assert len(events) == 1 and store.get_credential(device.ids["alice"]).sign_count == count


def test_out_of_order_counters_are_never_accepted(backend: Any, serve: Any, tmp_path: Path) -> None:
    device = _Device(tmp_path / "vault")
    device.enrol(backend.url, ["alice"])
    signed = device.assertions(backend.url, "alice", 12)
    random.Random(14).shuffle(signed)
    server = serve(workers=2)
    results = _race(server, [body for _, _, body in signed])
    accepted = sorted(r["sign_count"] for s, r in results if s == 200)
    assert accepted, "at least the highest counter that arrived first is accepted"
    assert {r["reason"] for s, r in results if s != 200} <= {"counter_regression"}
    with open_store(backend.url) as store:
        trail = [
            f["sign_count"] for _, e, f in store.audit_events(200) if e == "assertion_verified"
        ]
        # In commit order the accepted counters strictly increase: none went in below another.
        assert trail == sorted(set(trail)) == accepted
        assert store.get_credential(device.ids["alice"]).sign_count == accepted[-1]
    # Deterministically: once 12 is in, every lower counter is refused.
    late = device.assertions(backend.url, "alice", 1)
    status, answer = server.post("/verify", late[0][2])
    assert status == 200 and answer["sign_count"] == 13


def _load(
    server: _Server, per_user: dict[str, list[tuple[bytes, int, bytes]]], kill_after: int
) -> tuple[list[tuple[str, bytes, int]], int, list[int]]:
    """Each user's client sends its assertions in order; after ``kill_after`` acceptances
    one worker is SIGKILLed. Returns the accepted (user, challenge, count), the acceptances
    after the kill, and the killed pid."""
    accepted: list[tuple[str, bytes, int]] = []
    lock = threading.Lock()
    enough = threading.Event()
    killed = threading.Event()
    after = [0]

    def client(user: str) -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        for ch, count, body in per_user[user]:
            if len(accepted) >= kill_after:
                killed.wait(60)  # the kill lands mid-load, never after it
            try:
                status, answer = server.post("/verify", body, conn)
            except (OSError, http.client.HTTPException):
                conn.close()  # the worker died under this request: its answer is lost
                conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
                continue
            if status == 200:
                assert answer["sign_count"] == count
                with lock:
                    accepted.append((user, ch, count))
                    after[0] += killed.is_set()
                    if len(accepted) >= kill_after:
                        enough.set()
        conn.close()

    threads = [threading.Thread(target=client, args=(u,)) for u in per_user]
    for t in threads:
        t.start()
    assert enough.wait(120)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    killed.set()
    for t in threads:
        t.join(180)
    return accepted, after[0], [victim]


def test_a_worker_killed_mid_load_loses_nothing_committed(
    backend: Any, serve: Any, tmp_path: Path
) -> None:
    device = _Device(tmp_path / "vault")
    users = [f"user{i}" for i in range(4)]
    device.enrol(backend.url, users)
    per_user = {u: device.assertions(backend.url, u, 10) for u in users}
    server = serve(workers=2)
    accepted, after_kill, [victim] = _load(server, per_user, kill_after=8)
    assert after_kill >= 1, "the surviving worker kept serving"
    assert victim not in server.worker_pids()
    # Every answered acceptance is durable: challenge burnt, counter at least there, audited.
    with open_store(backend.url) as store:
        trail = {
            (f["credential_id"], f["sign_count"])
            for _, e, f in store.audit_events(1000)
            if e == "assertion_verified"
        }
        for user, ch, count in accepted:
            assert store.get_credential(device.ids[user]).sign_count >= count
            assert (device.ids[user].hex(), count) in trail
            found = store.use_challenge(ch)
            assert found is not None and found[3] is True  # already used before this look
    # The supervisor replaced the dead worker, and the service still answers.
    deadline = time.monotonic() + 120
    while len(server.worker_pids()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    [(_, count, body)] = device.assertions(backend.url, users[0], 1)
    status, answer = server.post("/verify", body)
    assert status == 200 and answer["sign_count"] == count


def test_postgres_restarted_mid_load_fails_closed_then_recovers(tmp_path: Path) -> None:
    from helpers.postgres import PostgresServer, find_bindir, required

    from verifier.server import create_app, serve_in_thread
    from verifier.server.http import Limits

    bindir = find_bindir()
    if bindir is None:
        if required():
            pytest.fail("DEVICEBIO_REQUIRE_POSTGRES is set but there is no PostgreSQL")
        pytest.skip("no PostgreSQL server binaries")
    pg = PostgresServer(bindir)
    try:
        pg.start()
        url = pg.url()
        device = _Device(tmp_path / "vault")
        device.enrol(url, ["alice"])
        signed = device.assertions(url, "alice", 20)
        app = create_app(
            db=url,
            rp_id=RP_ID,
            origin=ORIGIN,
            revocation_key_file=None,
            limits=Limits(rate=1_000_000, burst=1_000_000),  # one client address; not under test
        )
        with serve_in_thread(app) as bg:
            host, port = bg.url.removeprefix("http://").rsplit(":", 1)

            def verify(body: bytes) -> tuple[int, dict[str, Any]]:
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    conn.request("POST", "/verify", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    return r.status, json.loads(r.read())
                finally:
                    conn.close()

            bodies = iter(signed)
            for _ in range(3):
                status, answer = verify(next(bodies)[2])
                assert status == 200, answer
            pg.stop("immediate")  # a crash of the database server
            status, answer = verify(next(bodies)[2])
            assert (status, answer["ok"], answer["reason"]) == (503, False, "storage")
            pg.start()
            outcomes = []
            for _, count, body in bodies:
                status, answer = verify(body)
                outcomes.append(status)
                if status == 200:
                    assert answer["sign_count"] == count
                    break
                assert (status, answer["reason"]) == (503, "storage")
            assert outcomes[-1] == 200, f"no recovery: {outcomes}"
    finally:
        pg.destroy()


def test_cli_commands_open_the_store_their_db_url_names(
    backend: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from verifier import cli

    code = cli.main(
        ["challenge", "--db", backend.url, "--user", "alice", "--purpose", "authenticate", "--json"]
    )
    assert code == 0
    value = json.loads(capsys.readouterr().out)["challenge"]
    with open_store(backend.url) as store:  # the challenge is in that very store, unused
        found = store.use_challenge(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        assert found is not None and found[:2] == ("alice", "authenticate") and not found[3]
    assert cli.main(["challenge", "--db", "mysql://x/y", "--user", "a", "--purpose", "register"])


def test_serve_refuses_a_worker_count_out_of_range(tmp_path: Path) -> None:
    from verifier import cli
    from verifier.errors import VerifierError
    from verifier.server import MAX_WORKERS, serve_workers

    args = ["serve", "--db", str(tmp_path / "v.db"), "--rp-id", RP_ID, "--origin", ORIGIN]
    for bad in ("0", str(MAX_WORKERS + 1)):
        assert cli.main([*args, "--workers", bad]) == 2
    with pytest.raises(VerifierError):
        serve_workers(lambda: None, workers=0)  # type: ignore[arg-type,return-value]
