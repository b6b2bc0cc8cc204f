"""SQLite group commit in one verifier process: durable commits per sign-in, and sign-ins/s,
with K threads verifying at once, against the same store with batching turned off.

    PYTHONPATH=$PWD python benchmarks/sqlite_group_commit.py --json out/gc.json \\
        [--clients 1,8,32,64] [--n 320]

What ``verifier serve`` does with a SQLite file, without HTTP: one ``SQLiteStore`` on a file
(WAL, ``synchronous=FULL``) shared by K threads (the server's thread pool), each calling
``verify_assertion`` on its own client's assertions one after another. The COMMIT statements
the store's connection runs are counted (an SQLite trace on the connection; diagnostic only).
The peer, in the same run on the same file: the same store with at most one verification per
commit (``_MAX_BATCH = 1``), i.e. one fsync per sign-in, as before group commit. Every
verification must be accepted (the script exits 1 otherwise). The assertions and the database
are rp_load.py's (one credential per client, consecutive counters); the database is reset
before every run, and the two modes alternate which goes first.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _machine import describe_machine, machine_line  # noqa: E402
from rp_load import ORIGIN, RP_ID, Signer, build_signer, prepare_devicebio, reset  # noqa: E402

from verifier import verify_assertion  # noqa: E402
from verifier.store import sqlite as sqlite_module  # noqa: E402

MODES = {"group_commit": sqlite_module._MAX_BATCH, "one_commit_per_sign_in": 1}


def run(path: Path, signer: Signer, clients: int, n: int, max_batch: int) -> dict[str, Any]:
    per = math.ceil(n / clients)
    texts = [signer.texts[c][:per] for c in range(clients)]
    challenges = [[ch for ch, _ in signer.per_client[c][:per]] for c in range(clients)]
    saved = sqlite_module._MAX_BATCH
    sqlite_module._MAX_BATCH = max_batch
    store = sqlite_module.SQLiteStore(path)
    commits = [0]

    def trace(sql: str) -> None:
        if sql.split(None, 1)[0].upper() == "COMMIT":
            commits[0] += 1

    # The store keeps its connection private; tracing it is for this diagnostic only.
    store._conn.set_trace_callback(trace)
    refused = [0]
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        start.wait()
        for ch, text in zip(challenges[c], texts[c], strict=True):
            try:
                verify_assertion(
                    credential=text,
                    expected_challenge=ch,
                    expected_origin=ORIGIN,
                    expected_rp_id=RP_ID,
                    store=store,
                )
            except Exception:  # counted: any refusal breaks the benchmark
                refused[0] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    try:
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    finally:
        store.close()
        sqlite_module._MAX_BATCH = saved
    if refused[0]:
        raise RuntimeError(f"{refused[0]} sign-ins refused: the benchmark is broken")
    done = sum(len(x) for x in texts)
    return {
        "clients": clients,
        "sign_ins": done,
        "commits": commits[0],
        "commits_per_sign_in": round(commits[0] / done, 3),
        "seconds": round(seconds, 3),
        "per_s": round(done / seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, metavar="OUT")
    parser.add_argument("--clients", default="1,8,32,64", help="concurrent threads per run")
    parser.add_argument("--n", type=int, default=320, help="sign-ins per run")
    args = parser.parse_args(argv)
    clients = [int(k) for k in args.clients.split(",")]
    machine = describe_machine(("fido2", "PyNaCl"))
    print(machine_line(machine), flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gc_bench_") as tmp:
        work = Path(tmp)
        signer = build_signer(work, clients, args.n)
        path = work / "rp.db"
        prepare_devicebio(f"sqlite:///{path}", signer)
        for i, k in enumerate(clients):
            order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
            for mode in order:
                reset(f"sqlite:///{path}")
                row = {"mode": mode, **run(path, signer, k, args.n, MODES[mode])}
                rows.append(row)
                print(
                    f"  {mode:24s} clients {k:3d}: {row['per_s']:8.1f}/s"
                    f"  {row['commits_per_sign_in']:.3f} commits per sign-in"
                    f" ({row['commits']} for {row['sign_ins']})",
                    flush=True,
                )
    machine["load_after"] = describe_machine()["load_average"]
    print(f"load average after: {machine['load_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
