"""The reference server's resource limits, each proved against a real uvicorn on 127.0.0.1
(issue 10, item 8). Before them, 10 silent sockets, 10 half-sent heads and 10 half-sent
bodies were all still held after 8 s, one client got 200 of 200 challenges for one user, and
every bogus /verify added an audit row that stayed forever.

Real sockets, bounded waits: every read has a timeout, and each timing assertion leaves a
wide margin over the configured limit (limits of 0.3 s; a socket must be closed within 5 s).
Rate limits and purges use the app's injected clock, so they do not depend on speed at all.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the server tests need the [server] extra")
httpx = pytest.importorskip("httpx", reason="the server tests need the [test] extra")

from verifier.errors import VerifierError  # noqa: E402
from verifier.server import create_app, serve_in_thread  # noqa: E402
from verifier.server.http import Limits, TokenBuckets  # noqa: E402

RP_ID = "example.com"
ORIGIN = "https://example.com"
T0 = 1_800_000_000.0
_CLOSE_WITHIN = 5.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _serve(tmp_path: Path, limits: Limits, clock: Clock | None = None) -> Any:
    app = create_app(
        db=tmp_path / "v.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=None,
        limits=limits,
        clock=clock or Clock(),
    )
    return serve_in_thread(app)


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[Any]:
    limits = Limits(header_timeout=0.3, body_timeout=0.3, keep_alive_timeout=0.3)
    with _serve(tmp_path, limits) as server:
        yield server


def _connect(port: int, payload: bytes = b"", source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(
        ("127.0.0.1", port), timeout=_CLOSE_WITHIN, source_address=(source, 0)
    )
    if payload:
        s.sendall(payload)
    return s


def _closed_by_server(s: socket.socket, within: float = _CLOSE_WITHIN) -> tuple[bool, bytes]:
    """Read until the server closes (True) or ``within`` seconds pass (False)."""
    got = b""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except TimeoutError:
                return False, got
            except ConnectionResetError:
                return True, got
            if not chunk:
                return True, got
            got += chunk
        return False, got
    finally:
        s.close()


_CHALLENGE = json.dumps({"user": "alice", "purpose": "authenticate"}).encode()


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def test_silent_sockets_are_closed(tight: Any) -> None:
    socks = [_connect(tight.port) for _ in range(10)]
    assert all(_closed_by_server(s)[0] for s in socks)


def test_a_trickled_head_is_closed_at_its_deadline(tight: Any) -> None:
    # Half a head, then one byte every 0.1 s: the deadline is for the whole head, not a gap.
    s = _connect(tight.port, b"POST /challenge HTTP/1.1\r\nHost: x\r\n")
    start = time.monotonic()
    closed = False
    for _ in range(40):
        try:
            s.sendall(b"X")
        except OSError:
            closed = True
            break
        time.sleep(0.1)
    assert closed or _closed_by_server(s)[0]
    assert time.monotonic() - start < _CLOSE_WITHIN
    partial = [_connect(tight.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(10)]
    assert all(_closed_by_server(p)[0] for p in partial)


def test_a_partial_body_gets_408_and_is_closed(tight: Any) -> None:
    head = _post("/challenge", _CHALLENGE)
    socks = [_connect(tight.port, head[: -len(_CHALLENGE) + 4]) for _ in range(10)]
    for s in socks:
        closed, answer = _closed_by_server(s)
        assert closed
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:40]
        assert b'"reason": "request_timeout"' in answer


def test_an_idle_kept_alive_connection_is_closed(tight: Any) -> None:
    s = _connect(tight.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    closed, answer = _closed_by_server(s)
    assert answer.startswith(b"HTTP/1.1 200 ") and closed


def test_an_oversized_head_is_refused(tight: Any) -> None:
    s = _connect(tight.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
    closed, answer = _closed_by_server(s)
    assert closed and answer.startswith(b"HTTP/1.1 400 ")


def test_concurrency_is_capped(tmp_path: Path) -> None:
    limits = Limits(limit_concurrency=4, header_timeout=30.0)
    with _serve(tmp_path, limits) as server:
        held = [_connect(server.port) for _ in range(4)]  # four silent connections
        time.sleep(0.2)  # let the server accept them
        s = _connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        _, answer = _closed_by_server(s)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:40]
        for h in held:
            h.close()
        deadline = time.monotonic() + _CLOSE_WITHIN
        while True:  # the slots free as the server notices the closes
            r = httpx.get(server.url + "/healthz", timeout=_CLOSE_WITHIN)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 200


def _client(server: Any, source: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=server.url, transport=transport, timeout=_CLOSE_WITHIN)


def test_challenges_and_verifies_are_rate_limited_per_address(tmp_path: Path) -> None:
    clock = Clock()
    limits = Limits(rate=1.0, burst=3, max_open_challenges=1000)
    with (
        _serve(tmp_path, limits, clock) as server,
        _client(server) as a,
        _client(server, "127.0.0.2") as b,
    ):
        body = {"user": "alice", "purpose": "authenticate"}
        assert [a.post("/challenge", json=body).status_code for _ in range(3)] == [200] * 3
        refused = a.post("/challenge", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["reason"] == "rate_limited"
        bogus = {"challenge": "AAAA", "credential": {}}
        assert a.post("/verify", json=bogus).status_code == 429  # one bucket for both
        assert b.post("/challenge", json=body).status_code == 200  # another address
        assert a.get("/healthz").status_code == 200  # not rate limited
        clock.t += 1.0  # one token back
        assert a.post("/challenge", json=body).status_code == 200
        assert a.post("/challenge", json=body).status_code == 429


def test_outstanding_challenges_per_user_are_capped(tmp_path: Path) -> None:
    clock = Clock()
    limits = Limits(rate=1000.0, burst=1000, max_open_challenges=3)
    with _serve(tmp_path, limits, clock) as server, _client(server) as c:
        alice = {"user": "alice", "purpose": "authenticate"}
        assert [c.post("/challenge", json=alice).status_code for _ in range(3)] == [200] * 3
        refused = c.post("/challenge", json=alice)
        assert refused.status_code == 429 and refused.json()["reason"] == "too_many_challenges"
        assert c.post("/challenge", json={**alice, "user": "bob"}).status_code == 200
        clock.t += 301  # past the default TTL: they no longer count
        assert c.post("/challenge", json=alice).status_code == 200


def test_audit_events_past_their_retention_are_purged(tmp_path: Path) -> None:
    clock = Clock(time.time())  # audit rows carry the wall clock; the purge uses the app's
    limits = Limits(rate=1000.0, burst=1000, audit_retention=86_400.0, purge_interval=60.0)
    app = create_app(
        db=tmp_path / "v.db",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=None,
        limits=limits,
        clock=clock,
    )
    store = app.state.store
    bogus = {"challenge": "A" * 43, "credential": {}}
    with serve_in_thread(app) as server, _client(server) as c:
        for _ in range(20):
            assert c.post("/verify", json=bogus).status_code in (400, 403)
        before = len(store.audit_events(1000))
        assert before >= 20  # one row per bogus /verify
        clock.t += 2 * 86_400  # two days later, the next request runs the purge
        c.post("/verify", json=bogus)
        events = [e for _, e, _ in store.audit_events(1000)]
    assert events.count("audit_purged") == 1
    assert len(events) <= 3  # the purge record and what came after it


def test_token_buckets_are_exact_and_bounded() -> None:
    buckets = TokenBuckets(rate=2.0, burst=2, max_clients=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert buckets.take("a", 0.5) == 0.0  # one token back after 0.5 s at 2/s
    for key in "bcd":
        buckets.take(key, 1.0)
    assert len(buckets._buckets) == 3 and "a" not in buckets._buckets  # oldest evicted


@pytest.mark.parametrize(
    "kw",
    [
        {"header_timeout": 0},
        {"rate": -1},
        {"burst": 0},
        {"limit_concurrency": 1.5},
        {"audit_retention": float("nan")},
        {"max_header_bytes": 10},
    ],
)
def test_limits_refuse_nonsense(kw: dict[str, Any]) -> None:
    with pytest.raises(VerifierError):
        Limits(**kw)


def test_serve_flags_build_the_limits() -> None:
    from verifier.cli._common import UsageError
    from verifier.cli.main import build_parser
    from verifier.cli.serve import _limits

    base = ["serve", "--db", "v.db", "--rp-id", RP_ID, "--origin", ORIGIN]
    args = build_parser().parse_args([*base, "--rate", "2", "--audit-days", "0"])
    assert _limits(args) == Limits(rate=2.0, audit_retention=None)
    assert _limits(build_parser().parse_args(base)) == Limits()
    with pytest.raises(UsageError):
        _limits(build_parser().parse_args([*base, "--burst", "0"]))


def test_accepted_connections_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto says TCP; the listening socket
    must say so, or every response's body (written after its head) waits for the client's
    delayed ACK: ~40 ms per request (1 client: 22 sign-ins/s instead of ~200/s)."""
    import asyncio

    from verifier.server.run import _listening_socket

    async def main() -> int:
        sock = _listening_socket("127.0.0.1", 0, allow_non_loopback=False)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                s = transport.get_extra_info("socket")
                accepted.set_result(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            try:
                return await asyncio.wait_for(accepted, _CLOSE_WITHIN)
            finally:
                writer.close()

    assert asyncio.run(main()) != 0
