"""The HTTP layer alone: what devicebio's server costs per ``POST /verify`` around the
verification, against the py_webauthn reference server's own HTTP part.

    PYTHONPATH=$PWD python benchmarks/http_layer.py [--n 300] [--rounds 10] [--json OUT]

Both apps are driven in this process through ASGI (no sockets, no uvicorn: the server that
runs them is the same for both in ``rp_load.py``), one request at a time, with the real
assertion body a device sends. What each does besides verifying is all that runs:

* devicebio: ``create_app``'s whole stack (the limits middleware with its rate limit and body
  deadline, the endpoint's checks of the body, the thread hand-off, the decision view and its
  JSON) with ``verify_assertion`` answering a result it returned for real beforehand;
* reference: ``_rp_ref.ref_http_app`` (Starlette's ``request.body()``, ``json.loads``,
  ``run_in_threadpool``, ``JSONResponse``) around a ``run`` that returns at once.

Reported: CPU microseconds per request of this process (the worker threads included),
median over ``--rounds`` alternating blocks of ``--n`` requests each, and the difference.
On a shared machine CPU time still moves with other load; instruction counts do not:

    valgrind --tool=callgrind --instr-atstart=no python benchmarks/http_layer.py \\
        --only devicebio --n 100 --callgrind

counts only the ``--n`` timed requests (callgrind_control switches counting on and off around
them; valgrind prints "Collected"); ``--only ref`` for the peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _machine import describe_machine, machine_line  # noqa: E402
from _rp_ref import ORIGIN, RP_ID, ref_http_app  # noqa: E402


def _signed_body() -> tuple[Any, bytes, bytes]:
    """One registered credential and one real signed assertion body for it."""
    from rp_load import build_signer

    with tempfile.TemporaryDirectory() as work:
        signer = build_signer(Path(work), [1], 1)
    challenge, body = signer.per_client[0][0]
    return signer.records[0], challenge, body


def _apps(record: Any, challenge: bytes, body: bytes) -> dict[str, Any]:
    import verifier.server.routes as routes
    from verifier.assertion import verify_assertion
    from verifier.server import create_app
    from verifier.server.http import Limits
    from verifier.store import SQLiteStore

    store = SQLiteStore(":memory:")
    store.add_credential(record)
    store.insert_challenge(challenge, "user0", "authenticate", time.time() + 3600)
    result = verify_assertion(
        credential=json.loads(body)["credential"],
        expected_challenge=challenge,
        expected_origin=ORIGIN,
        expected_rp_id=RP_ID,
        store=store,
    )
    store.close()
    # The verification itself is priced by verify_throughput.py; here it answers at once.
    routes.verify_assertion = lambda **_: result  # type: ignore[assignment]
    devicebio = create_app(
        db=":memory:",
        rp_id=RP_ID,
        origin=ORIGIN,
        revocation_key_file=None,
        # Every request here comes from one address: lift the rate limit (it still runs).
        limits=Limits(rate=1_000_000, burst=1_000_000),
    )
    return {"devicebio": devicebio, "ref": ref_http_app(lambda _body: 1)}


async def _one(app: Any, body: bytes) -> None:
    sent: list[dict[str, Any]] = []
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # no disconnect while the answer is written
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    head = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/verify",
        "raw_path": b"/verify",
        "query_string": b"",
        "root_path": "",
        "headers": head,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    if sent[0]["status"] != 200 or json.loads(sent[1]["body"])["ok"] is not True:
        raise SystemExit("a request was refused: the benchmark is broken")


async def _block(app: Any, body: bytes, n: int) -> float:
    c0 = time.process_time()
    for _ in range(n):
        await _one(app, body)
    return (time.process_time() - c0) / n * 1e6


def _callgrind(on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        check=True,
        capture_output=True,
    )


async def _main(args: argparse.Namespace, apps: dict[str, Any], body: bytes) -> dict[str, Any]:
    names = [args.only] if args.only else list(apps)
    for name in names:
        await _block(apps[name], body, 50)  # warm-up: imports, first thread
    if args.callgrind:
        _callgrind(True)
        await _block(apps[names[0]], body, args.n)
        _callgrind(False)
        return {}
    us: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            us[name].append(await _block(apps[name], body, args.n))
    return {name: round(statistics.median(v), 1) for name, v in us.items()} | {"rounds": us}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="requests per block")
    parser.add_argument("--rounds", type=int, default=10, help="blocks per app, alternating")
    parser.add_argument("--only", choices=("devicebio", "ref"))
    parser.add_argument("--callgrind", action="store_true", help="under valgrind: count --n")
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args(argv)
    if args.callgrind and not args.only:
        parser.error("--callgrind needs --only")
    before = describe_machine(("uvicorn", "starlette", "anyio"))
    if not args.callgrind:
        print(machine_line(before), flush=True)
    record, challenge, body = _signed_body()
    out = asyncio.run(_main(args, _apps(record, challenge, body), body))
    if args.callgrind:
        return 0
    for name in ("devicebio", "ref"):
        if name in out:
            print(f"{name:<10} {out[name]:7.1f} us CPU per request (median of {args.rounds})")
    if "devicebio" in out and "ref" in out:
        print(f"difference {out['devicebio'] - out['ref']:+.1f} us")
    if args.json:
        out |= {"n": args.n, "machine": before, "load_average_after": os.getloadavg()}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
