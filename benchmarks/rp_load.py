"""Sign-ins per second over HTTP: devicebio's reference server against the thinnest honest
py_webauthn relying party, same machine, same database, same worker count, same clients.

    PYTHONPATH=$PWD python benchmarks/rp_load.py --json out/rp_load.json \\
        [--workers 2] [--clients 1,8,32,64] [--stores postgres,sqlite] [--n 800] \\
        [--assertions FILE]

``--assertions FILE`` keeps the signed assertions (~30 ms each, minutes for a full run) in
FILE: sign once with ``--sign-only``, then time runs (under a benchmark lock, split by
``--clients``) that only load them.

For each store (a throwaway PostgreSQL cluster started here, like the tests' fixture; a
SQLite file), both servers run at once and each client count is measured on both back to
back, alternating which goes first, so the machine's drifting load falls on both alike. The
servers are ``verifier serve --workers N`` and ``_rp_ref.create_ref_app`` under the same
uvicorn runner (``verifier.server.serve_workers``). K concurrent clients on 127.0.0.1 each
send their own device's assertions one after another over one keep-alive connection; every
answer must be an acceptance (the script exits 1 otherwise). Durable state on both sides:
every challenge burnt and every counter raised in a committed, flushed transaction before the
answer.

The assertions are real: one devicebio vault holding one credential per client, each
registered through ``verify_registration``, signing face + passed-liveness assertions with
consecutive counters over challenges stored beforehand. The database is reset (challenges
unused, counters 0) before every run, so each run replays the same assertions.

Reported per (server, store, clients): accepted sign-ins/s (with a 95% interval from the
rates of 10 consecutive slices of the run), p50 and p99 latency. Also the library-only
figure of py_webauthn (no HTTP, no state). Bounded: at most ``--n`` sign-ins and
``--max-seconds`` per run. The machine's load average is recorded before and after: on a
shared machine, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import pickle
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from _machine import describe_machine, machine_line  # noqa: E402
from _rp_ref import ORIGIN, RP_ID, create_ref_app, schema  # noqa: E402

SERVERS = ("devicebio", "py_webauthn_ref")
STORES = ("postgres", "sqlite")
_EXPIRES = 4_000_000_000.0  # far future: expiry is not what is measured
_SLICES = 10


@dataclass
class Signer:
    """Pre-signed assertions: ``per_client[c]`` is client c's list of (challenge, body)."""

    records: list[Any]  # CredentialRecord per client
    per_client: list[list[tuple[bytes, bytes]]]
    texts: list[list[str]]  # the credential JSON text, for the library-only loop


def _need(clients: Sequence[int], n: int) -> list[int]:
    # What each client index needs: the most any run gives it (runs reuse the same list).
    return [max(math.ceil(n / k) for k in clients if k > c) for c in range(max(clients))]


def load_or_build_signer(work: Path, clients: Sequence[int], n: int, cache: Path | None) -> Signer:
    """The signed assertions from ``cache`` if it holds enough of them, else signed now (and
    kept in ``cache``). Only this script's own output is read back."""
    need = _need(clients, n)
    if cache is not None and cache.exists():
        signer: Signer = pickle.loads(cache.read_bytes())  # only our own --sign-only file
        have = [len(x) for x in signer.per_client]
        if len(have) >= len(need) and all(h >= k for h, k in zip(have, need, strict=False)):
            return signer
    signer = build_signer(work, clients, n)
    if cache is not None:
        cache.write_bytes(pickle.dumps(signer))
    return signer


def build_signer(work: Path, clients: Sequence[int], n: int) -> Signer:
    from devicebio.hazmat.credentials import Credentials, UserVerification
    from devicebio.protocol import LivenessClaim, Method, liveness_plan, liveness_sequence_hash
    from devicebio.store.vault import RawKey, Vault
    from verifier import Purpose, issue_challenge, verify_registration
    from verifier.store import SQLiteStore

    def uv(challenge: bytes) -> UserVerification:
        digest = liveness_sequence_hash(challenge, liveness_plan(challenge))
        return UserVerification(
            method=Method.FACE,
            liveness=LivenessClaim(
                kind="active-challenge", passed=True, sequence_hash=digest, frames=500
            ),
            model="bench-model@sha256:0123",
            verified=True,
        )

    k_max = max(clients)
    need = _need(clients, n)
    device = Credentials(Vault.create(work / "vault", RawKey(b"\x5a" * 32)))
    scratch = SQLiteStore(":memory:")
    records = []
    for c in range(k_max):
        ch = issue_challenge(scratch, user=f"user{c}", purpose=Purpose.REGISTER).value
        reg = device.register(
            rp_id=RP_ID, origin=ORIGIN, challenge=ch, user_name=f"user{c}", verification=uv(ch)
        )
        records.append(
            verify_registration(
                credential=reg.to_json(),
                expected_challenge=ch,
                expected_origin=ORIGIN,
                expected_rp_id=RP_ID,
                store=scratch,
                user=f"user{c}",
            ).record
        )
    scratch.close()
    per_client: list[list[tuple[bytes, bytes]]] = []
    texts: list[list[str]] = []
    for c in range(k_max):
        mine, my_texts = [], []
        for i in range(need[c]):
            # Deterministic challenges: the same run replays byte for byte.
            ch = hashlib.sha256(b"rp_load|%d|%d" % (c, i)).digest()
            a = device.authenticate(
                rp_id=RP_ID,
                origin=ORIGIN,
                challenge=ch,
                verification=uv(ch),
                credential_id=records[c].credential_id,
            )
            cred = a.to_json()
            from devicebio.protocol import b64url_encode

            body = json.dumps({"challenge": b64url_encode(ch), "credential": cred}).encode()
            mine.append((ch, body))
            my_texts.append(json.dumps(cred))
        per_client.append(mine)
        texts.append(my_texts)
    return Signer(records=records, per_client=per_client, texts=texts)


# --------------------------------------------------------------------------- databases


def _all_challenges(signer: Signer) -> Iterator[tuple[int, bytes]]:
    for c, items in enumerate(signer.per_client):
        for ch, _ in items:
            yield c, ch


def prepare_devicebio(url: str, signer: Signer) -> None:
    from verifier.store import open_store

    store = open_store(url)
    try:
        with store.atomic():
            for rec in signer.records:
                store.add_credential(rec)
            for c, ch in _all_challenges(signer):
                store.insert_challenge(ch, f"user{c}", "authenticate", _EXPIRES)
    finally:
        store.close()


def prepare_ref(url: str, signer: Signer) -> None:
    with _raw(url) as (conn, p):
        for statement in schema(url):
            conn.execute(statement)
        conn.executemany(
            f"INSERT INTO credentials (id, public_key, sign_count) VALUES ({p}, {p}, 0)",
            [(r.credential_id, r.public_key) for r in signer.records],
        )
        conn.executemany(
            f"INSERT INTO challenges (value, used) VALUES ({p}, {_false(url)})",
            [(ch,) for _, ch in _all_challenges(signer)],
        )


def _false(url: str) -> str:
    return "false" if url.startswith("postgresql://") else "0"


@contextlib.contextmanager
def _raw(url: str) -> Iterator[tuple[Any, str]]:
    """A plain connection in one transaction, committed on the way out."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url) as conn:
            cur = conn.cursor()
            yield cur, "%s"
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            with conn:
                yield conn, "?"
        finally:
            conn.close()


def reset(url: str) -> None:
    """Every challenge unused, every counter 0: the next run replays the same assertions."""
    with _raw(url) as (conn, _):
        conn.execute(f"UPDATE challenges SET used = {_false(url)}")
        conn.execute("UPDATE credentials SET sign_count = 0")


# --------------------------------------------------------------------------- servers


@contextlib.contextmanager
def server(kind: str, url: str, workers: int) -> Iterator[tuple[str, int, int]]:
    if kind == "devicebio":
        cmd = [sys.executable, "-m", "verifier.cli", "serve", "--db", url, "--rp-id", RP_ID]
        cmd += ["--origin", ORIGIN, "--workers", str(workers), "--json"]
        # Every client here is 127.0.0.1: lift the per-address rate limit (it is proved in
        # test_server_limits), or this would measure the limiter, not the verifier.
        cmd += ["--rate", "1000000", "--burst", "1000000", "--limit-concurrency", "10000"]
    else:
        cmd = [sys.executable, __file__, "--serve-ref", url, "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{kind} server did not start ({proc.wait()})")
        host_port = json.loads(line)["url"].removeprefix("http://")
        host, port = host_port.rsplit(":", 1)
        _wait_ready(host, int(port), workers)
        yield host, int(port), proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(host: str, port: int, workers: int, timeout: float = 120.0) -> None:
    """Until a request gets an HTTP answer (404 on GET /); with several workers, until
    every worker process has been spawned and imported (they answer on the shared socket)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    answered = 0
    while answered < 3 * workers:
        if time.monotonic() > deadline:
            raise RuntimeError("server not ready")
        try:
            urllib.request.urlopen(f"http://{host}:{port}/nothing", timeout=10)
        except urllib.error.HTTPError:
            answered += 1
            continue
        except OSError:
            time.sleep(0.2)
    time.sleep(1.0 * workers)  # the last workers finish importing


# --------------------------------------------------------------------------- load


def _cpu_seconds(server_pgid: int) -> dict[str, float]:
    """CPU seconds used so far by the server under test (its process group: the supervisor
    and workers), by every PostgreSQL process (the other server's backends idle meanwhile),
    and by this load generator. Linux /proc only; empty elsewhere."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {"server": 0.0, "postgres": 0.0, "client": time.process_time()}
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # comm is in parentheses and may hold spaces: split after its closing one.
        comm = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        pgid, used = int(rest[2]), (int(rest[11]) + int(rest[12])) / tick
        if pgid == server_pgid:
            out["server"] += used
        elif comm == "postgres":
            out["postgres"] += used
    return out


def _cpu_per(before: dict[str, float], after: dict[str, float], row: dict[str, Any]) -> dict:
    """Microseconds of CPU per accepted sign-in, by who spent them (``{}`` without /proc).
    Warm-up is excluded; a backend that exits during the run loses its share (none do)."""
    if not before or not after or not row["accepted"]:
        return {}
    return {
        k: round((after[k] - before[k]) / row["accepted"] * 1e6, 0)
        for k in ("server", "postgres", "client")
    }


async def _client(
    host: str, port: int, bodies: list[bytes], lat: list[float], done: list[float], stop: float
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    refused = 0
    try:
        for body in bodies:
            if time.perf_counter() > stop:
                break
            head = (
                b"POST /verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            t0 = time.perf_counter()
            writer.write(head + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = json.loads(await reader.readexactly(length))
            t1 = time.perf_counter()
            if status != 200 or answer.get("ok") is not True:
                refused += 1
                continue
            lat.append(t1 - t0)
            done.append(t1)
    finally:
        writer.close()
    return refused


def run_load(
    host: str, port: int, signer: Signer, clients: int, n: int, max_seconds: float
) -> dict[str, Any]:
    per = math.ceil(n / clients)
    bodies = [[body for _, body in signer.per_client[c][:per]] for c in range(clients)]
    lat: list[float] = []
    done: list[float] = []

    async def main() -> tuple[float, list[int]]:
        t0 = time.perf_counter()
        stop = t0 + max_seconds
        refused = await asyncio.gather(
            *(_client(host, port, bodies[c], lat, done, stop) for c in range(clients))
        )
        return t0, list(refused)

    t0, refused = asyncio.run(main())
    if sum(refused):
        raise RuntimeError(f"{sum(refused)} sign-ins refused: the benchmark is broken")
    elapsed = max(done) - t0
    done.sort()
    # Rates of consecutive slices of completions: their spread gives the interval.
    size = max(1, len(done) // _SLICES)
    rates = []
    for i in range(0, len(done) - size + 1, size):
        start = t0 if i == 0 else done[i - 1]
        span = done[i + size - 1] - start
        if span > 0:
            rates.append(size / span)
    half = 1.96 * statistics.stdev(rates) / math.sqrt(len(rates)) if len(rates) > 1 else 0.0
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "clients": clients,
        "accepted": len(done),
        "seconds": round(elapsed, 3),
        "per_s": round(len(done) / elapsed, 1),
        "per_s_ci95": [round(len(done) / elapsed - half, 1), round(len(done) / elapsed + half, 1)],
        "p50_ms": round(lat_ms[len(lat_ms) // 2], 2),
        "p99_ms": round(lat_ms[min(len(lat_ms) - 1, math.ceil(0.99 * len(lat_ms)) - 1)], 2),
    }


def library_only(signer: Signer, n: int) -> dict[str, Any]:
    """py_webauthn alone on client 0's assertions: no HTTP, no state."""
    import webauthn

    texts = signer.texts[0][:n]
    key = signer.records[0].public_key
    c0, t0 = time.process_time(), time.perf_counter()
    for i, text in enumerate(texts):
        ch = signer.per_client[0][i][0]
        webauthn.verify_authentication_response(
            credential=text,
            expected_challenge=ch,
            expected_rp_id=RP_ID,
            expected_origin=ORIGIN,
            credential_public_key=key,
            credential_current_sign_count=i,
            require_user_verification=True,
        )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "n": len(texts),
        "per_s": round(len(texts) / wall, 1),
        "per_cpu_s": round(len(texts) / cpu, 1),
    }


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Any]:
    from helpers.postgres import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL binaries: install Debian's postgresql, or --stores sqlite")
    pg = PostgresServer(bindir)
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


def _pg_url(pg: Any, schema_name: str) -> str:
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema_name} CASCADE")
        admin.execute(f"CREATE SCHEMA {schema_name}")
        settings = admin.execute(
            "SELECT current_setting('synchronous_commit'), current_setting('fsync')"
        ).fetchone()
    if settings != ("on", "on"):
        raise SystemExit(f"PostgreSQL not durable: synchronous_commit, fsync = {settings}")
    return str(pg.url(search_path=schema_name))


def _serve_ref(url: str, workers: int) -> int:
    import functools

    from verifier.server import serve, serve_workers

    def listening(u: str) -> None:
        print(json.dumps({"url": u}), flush=True)

    if workers == 1:
        serve(create_ref_app(url), on_listening=listening)
    else:
        serve_workers(
            functools.partial(create_ref_app, url), workers=workers, on_listening=listening
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="OUT")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--clients", default="1,8,32,64", help="concurrent clients per run")
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--n", type=int, default=800, help="sign-ins per run at most")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="per run at most")
    parser.add_argument("--assertions", type=Path, metavar="FILE", help="signed-assertion cache")
    parser.add_argument("--sign-only", action="store_true", help="sign into --assertions, exit")
    parser.add_argument("--serve-ref", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ref:
        return _serve_ref(args.serve_ref, args.workers)
    clients = [int(k) for k in args.clients.split(",")]
    stores = [s for s in args.stores.split(",") if s]
    servers = [s for s in args.servers.split(",") if s]
    if not set(stores) <= set(STORES) or not set(servers) <= set(SERVERS) or min(clients) < 1:
        parser.error("unknown store or server, or clients < 1")
    before = describe_machine(("webauthn", "uvicorn", "starlette", "psycopg", "fido2", "PyNaCl"))
    print(machine_line(before), flush=True)
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as v,
        tempfile.TemporaryDirectory() as d,
        contextlib.ExitStack() as stack,
    ):
        t = time.perf_counter()
        signer = load_or_build_signer(Path(v), clients, args.n, args.assertions)
        print(
            f"{sum(map(len, signer.per_client))} signed assertions"
            f" ready in {time.perf_counter() - t:.0f} s"
        )
        if args.sign_only:
            return 0
        library = library_only(signer, min(args.n, len(signer.texts[0])))
        print(
            f"py_webauthn library only: {library['per_s']:.0f}/s wall,"
            f" {library['per_cpu_s']:.0f}/CPU-s"
        )
        pg = stack.enter_context(postgres_cluster()) if "postgres" in stores else None
        pg_version = None if pg is None else pg.version
        for store in stores:
            # Both servers up at once (an idle one costs nothing), and each client count run
            # on both back to back, alternating which goes first: the machine's load drifts
            # over minutes, and so it falls on both alike.
            with contextlib.ExitStack() as running:
                up: dict[str, tuple[str, str, int]] = {}
                for kind in servers:
                    if store == "postgres":
                        url = _pg_url(pg, f"bench_{kind}")
                    else:
                        url = f"sqlite:///{Path(d) / f'{kind}.db'}"
                    (prepare_devicebio if kind == "devicebio" else prepare_ref)(url, signer)
                    host, port, pgid = running.enter_context(server(kind, url, args.workers))
                    # Warm-up (imports, pools, first connections), not reported.
                    run_load(host, port, signer, min(8, max(clients)), 8 * 4, args.max_seconds)
                    up[kind] = (url, host, port, pgid)
                for i, k in enumerate(clients):
                    # Alternate per repeat of k as well, when --clients repeats counts.
                    flip = (i + clients[:i].count(k)) % 2
                    order = servers[::-1] if flip else servers
                    for kind in order:
                        url, host, port, pgid = up[kind]
                        reset(url)
                        cpu0 = _cpu_seconds(pgid)
                        row = run_load(host, port, signer, k, args.n, args.max_seconds)
                        row["cpu_us_per_signin"] = _cpu_per(cpu0, _cpu_seconds(pgid), row)
                        row = {"server": kind, "store": store, "workers": args.workers, **row}
                        rows.append(row)
                        cpu = row["cpu_us_per_signin"]
                        print(
                            f"  {kind:<16} {store:<8} clients {k:>3}: {row['per_s']:8.1f}/s"
                            f" {row['per_s_ci95']}  p50 {row['p50_ms']:7.1f} ms"
                            f"  p99 {row['p99_ms']:7.1f} ms  CPU us/sign-in"
                            + "".join(f" {name} {us:.0f}" for name, us in cpu.items()),
                            flush=True,
                        )
    after = describe_machine()
    ratios = _ratios(rows)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    if args.json:
        out = {
            "rows": rows,
            "library_only": {"py_webauthn": library},
            "ratios": ratios,
            "workers": args.workers,
            "n": args.n,
            "machine": before,
            "postgres_version": pg_version,
            "load_average_after": after["load_average"],
        }
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """devicebio against the reference, and against its own 1-client rate: a client count
    given several times (``--clients 1,32,1,32``: repeats, alternating) counts by its median
    rate, which a burst of load on a shared machine moves less than a single run."""
    runs: dict[tuple[str, str, int], list[float]] = {}
    for r in rows:
        runs.setdefault((r["server"], r["store"], r["clients"]), []).append(r["per_s"])
    by = {key: statistics.median(rates) for key, rates in runs.items()}
    out: dict[str, float] = {}
    for (server_, store, k), rate in sorted(by.items()):
        if server_ != "devicebio":
            continue
        peer = by.get(("py_webauthn_ref", store, k))
        if peer:
            out[f"devicebio_vs_ref_{store}_{k}"] = round(rate / peer, 3)
        one = by.get(("devicebio", store, 1))
        if one and k != 1:
            out[f"devicebio_{store}_{k}_vs_1_client"] = round(rate / one, 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
