"""Assertion verification throughput: devicebio's verifier against the WebAuthn libraries.

One run, one machine, the SAME assertions verified by:

1. ``verifier.verify_assertion`` with a file-backed ``SQLiteStore`` (WAL, synchronous=FULL):
   every assertion redeems its own single-use challenge issued beforehand with
   ``issue_challenge``, and the stored counter advances on each one;
2. python-fido2 ``Fido2Server.authenticate_complete`` (state from ``authenticate_begin``);
3. py_webauthn ``verify_authentication_response`` (given the right previous counter);
4. raw Ed25519 (``nacl.signing.VerifyKey.verify``) over the same signed messages: the floor.

Two informational rows help read the gap: devicebio with an in-memory SQLite store (same
checks, no fsync), and "parse + Ed25519" (JSON, base64url, SHA-256 and the signature, with no
WebAuthn checks at all).

Timed: verification only, including parsing the JSON text an RP receives. Not timed:
generating assertions on the device, issuing challenges, opening the store. Each round runs
every verifier over all N assertions, in a rotated order (interleaved, so background load
hits all of them alike); the headline figure is the BEST round (least disturbed by noise),
the median is printed too. The script exits non-zero if any verifier refuses any assertion.

Run::

    cd /work/main && PYTHONPATH=/work/main /work/venv/bin/python \\
        benchmarks/verify_throughput.py --json /tmp/vt.json [--n 2000] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import webauthn
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)

from devicebio.credentials import Credentials, UserVerification
from devicebio.vault import RawKey, Vault
from devicebio.wire import LivenessClaim, Method, b64url_decode, ed25519_public_key_from_cose
from verifier import (
    Challenge,
    Purpose,
    SQLiteStore,
    issue_challenge,
    verify_assertion,
    verify_registration,
)
from verifier.store import CredentialRecord

RP = "example.com"
ORIGIN = "https://example.com"
USER = "alice"
# Long enough that no challenge expires while the rounds run, even on a loaded machine.
CHALLENGE_TTL = 24 * 3600.0
REQUIRED = UserVerificationRequirement.REQUIRED
# What a real sign-in carries: face match with a passed active liveness check.
FACE = UserVerification(
    Method.FACE, LivenessClaim("active-challenge", True, b"\x03" * 32, 30), "dlib-resnet@1", True
)

DEVICEBIO = "devicebio"
FIDO2 = "fido2"
PY_WEBAUTHN = "py_webauthn"
RAW = "raw_ed25519"
DEVICEBIO_MEMORY = "devicebio_memory"
PARSE_RAW = "parse_ed25519"
HEADLINE = (DEVICEBIO, PY_WEBAUTHN, FIDO2, RAW)
LABELS = {
    DEVICEBIO: "devicebio verify_assertion (SQLite file, WAL, synchronous=FULL)",
    PY_WEBAUTHN: "py_webauthn verify_authentication_response",
    FIDO2: "python-fido2 Fido2Server.authenticate_complete",
    RAW: "raw Ed25519 VerifyKey.verify (floor)",
    DEVICEBIO_MEMORY: "devicebio verify_assertion (SQLite :memory:)  [info]",
    PARSE_RAW: "JSON + base64url + SHA-256 + Ed25519, no checks  [info]",
}


@dataclass(frozen=True)
class Item:
    """One assertion as an RP receives it, plus what each verifier is told to expect."""

    text: str  # AuthenticationResponseJSON, exactly as sent over the wire
    challenge: bytes
    sign_count: int
    fido2_state: Any  # Fido2Server's state dict for this challenge (from authenticate_begin)
    message: bytes  # authenticatorData || SHA-256(clientDataJSON): what the signature covers
    signature: bytes


@dataclass
class Fixture:
    """Everything the verifiers need, produced once by a real device and a real RP."""

    items: list[Item]
    challenges: list[Challenge]
    record: CredentialRecord
    template_db: Path  # pristine verifier DB: credential registered, N challenges issued
    work_dir: Path
    cose_key: bytes
    fido2_server: Fido2Server
    fido2_credentials: list[AttestedCredentialData]
    raw_public_key: bytes


class RefusedError(RuntimeError):
    """A verifier refused (or mis-reported) an assertion it must accept."""


# --------------------------------------------------------------------------- set-up


def build_fixture(n: int, work_dir: Path) -> Fixture:
    """Register one device credential with all three RPs, then sign ``n`` assertions."""
    vault = Vault.create(work_dir / "vault", RawKey(b"\x5a" * 32))
    device = Credentials(vault)
    template_db = work_dir / "template.db"
    store = SQLiteStore(template_db)
    try:
        reg_challenge = issue_challenge(
            store, user=USER, purpose=Purpose.REGISTER, ttl=CHALLENGE_TTL
        ).value
        reg = device.register(
            rp_id=RP, origin=ORIGIN, challenge=reg_challenge, user_name=USER, verification=FACE
        )
        reg_json = reg.to_json()
        ours = verify_registration(
            credential=reg_json,
            expected_challenge=reg_challenge,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
            user=USER,
            user_handle=reg.user_handle,
        )
        theirs = webauthn.verify_registration_response(
            credential=reg_json,
            expected_challenge=reg_challenge,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            require_user_verification=True,
        )
        server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP))
        _, reg_state = server.register_begin(
            PublicKeyCredentialUserEntity(id=reg.user_handle, name=USER),
            user_verification=REQUIRED,
            challenge=reg_challenge,
        )
        fido2_cred = server.register_complete(reg_state, reg_json).credential_data
        if fido2_cred is None or fido2_cred.credential_id != reg.credential_id:
            raise RefusedError("fido2 registration did not yield the credential")
        if theirs.credential_public_key != ours.record.public_key:
            raise RefusedError("py_webauthn and devicebio disagree on the credential key")

        items: list[Item] = []
        challenges: list[Challenge] = []
        for _ in range(n):
            ch = issue_challenge(store, user=USER, purpose=Purpose.AUTHENTICATE, ttl=CHALLENGE_TTL)
            a = device.authenticate(
                rp_id=RP, origin=ORIGIN, challenge=ch.value, verification=FACE
            )
            _, state = server.authenticate_begin(
                [fido2_cred], user_verification=REQUIRED, challenge=ch.value
            )
            challenges.append(ch)
            items.append(
                Item(
                    text=json.dumps(a.to_json()),
                    challenge=ch.value,
                    sign_count=a.sign_count,
                    fido2_state=state,
                    message=a.authenticator_data + hashlib.sha256(a.client_data_json).digest(),
                    signature=a.signature,
                )
            )
    finally:
        store.close()
    if Path(f"{template_db}-wal").exists():
        # The copy per round must hold the whole state: it only does once the WAL is merged.
        raise RuntimeError("template database still has a WAL file after close")
    counts = [it.sign_count for it in items]
    if counts != list(range(counts[0], counts[0] + n)):
        raise RuntimeError("device counters are not consecutive")
    return Fixture(
        items=items,
        challenges=challenges,
        record=ours.record,
        template_db=template_db,
        work_dir=work_dir,
        cose_key=theirs.credential_public_key,
        fido2_server=server,
        fido2_credentials=[fido2_cred],
        raw_public_key=ed25519_public_key_from_cose(ours.record.public_key),
    )


_store_serial = 0


def fresh_file_store(fx: Fixture) -> tuple[SQLiteStore, Path]:
    """A new verifier DB file in the pristine state: credential at counter 0, challenges
    issued and unused. Copying the template is exactly the state issue_challenge left."""
    global _store_serial
    _store_serial += 1
    path = fx.work_dir / f"verifier-{_store_serial}.db"
    shutil.copyfile(fx.template_db, path)
    return SQLiteStore(path), path


def fresh_memory_store(fx: Fixture) -> SQLiteStore:
    store = SQLiteStore(":memory:")
    store.add_credential(fx.record)
    for ch in fx.challenges:
        store.insert_challenge(ch.value, ch.user, ch.purpose.value, ch.expires_at)
    return store


def drop_file_store(store: SQLiteStore, path: Path) -> None:
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --------------------------------------------------------------------------- the loops
# Each returns (seconds, accepted). Set-up (store, keys) happens before the clock starts.


def _devicebio_loop(items: Sequence[Item], store: SQLiteStore) -> tuple[float, int]:
    ok = 0
    t0 = time.perf_counter()
    for it in items:
        try:
            result = verify_assertion(
                credential=it.text,
                expected_challenge=it.challenge,
                expected_origin=ORIGIN,
                expected_rp_id=RP,
                store=store,
            )
        except Exception as exc:
            raise RefusedError(f"devicebio refused assertion #{it.sign_count}: {exc!r}") from exc
        ok += result.new_sign_count == it.sign_count and result.user_verified
    return time.perf_counter() - t0, ok


def run_devicebio(fx: Fixture, items: Sequence[Item]) -> tuple[float, int]:
    store, path = fresh_file_store(fx)
    try:
        return _devicebio_loop(items, store)
    finally:
        drop_file_store(store, path)


def run_devicebio_memory(fx: Fixture, items: Sequence[Item]) -> tuple[float, int]:
    store = fresh_memory_store(fx)
    try:
        return _devicebio_loop(items, store)
    finally:
        store.close()


def run_fido2(fx: Fixture, items: Sequence[Item]) -> tuple[float, int]:
    server, creds = fx.fido2_server, fx.fido2_credentials
    want = creds[0].credential_id
    ok = 0
    t0 = time.perf_counter()
    for it in items:
        try:
            # Fido2Server takes a parsed mapping, so the RP's json.loads is on the clock.
            got = server.authenticate_complete(it.fido2_state, creds, json.loads(it.text))
        except Exception as exc:
            raise RefusedError(f"fido2 refused assertion #{it.sign_count}: {exc!r}") from exc
        ok += got.credential_id == want
    return time.perf_counter() - t0, ok


def run_py_webauthn(fx: Fixture, items: Sequence[Item]) -> tuple[float, int]:
    key = fx.cose_key
    ok = 0
    t0 = time.perf_counter()
    for it in items:
        try:
            result = webauthn.verify_authentication_response(
                credential=it.text,
                expected_challenge=it.challenge,
                expected_rp_id=RP,
                expected_origin=ORIGIN,
                credential_public_key=key,
                credential_current_sign_count=it.sign_count - 1,
                require_user_verification=True,
            )
        except Exception as exc:
            raise RefusedError(
                f"py_webauthn refused assertion #{it.sign_count}: {exc!r}"
            ) from exc
        ok += result.new_sign_count == it.sign_count and result.user_verified
    return time.perf_counter() - t0, ok


def run_raw(fx: Fixture, items: Sequence[Item]) -> tuple[float, int]:
    verify = nacl.signing.VerifyKey(fx.raw_public_key).verify
    ok = 0
    t0 = time.perf_counter()
    for it in items:
        try:
            verify(it.message, it.signature)
        except Exception as exc:
            raise RefusedError(f"Ed25519 refused assertion #{it.sign_count}: {exc!r}") from exc
        ok += 1
    return time.perf_counter() - t0, ok


def run_parse_raw(fx: Fixture, items: Sequence[Item]) -> tuple[float, int]:
    verify = nacl.signing.VerifyKey(fx.raw_public_key).verify
    sha256 = hashlib.sha256
    ok = 0
    t0 = time.perf_counter()
    for it in items:
        try:
            resp = json.loads(it.text)["response"]
            auth_data = b64url_decode(resp["authenticatorData"])
            client_data = b64url_decode(resp["clientDataJSON"])
            verify(auth_data + sha256(client_data).digest(), b64url_decode(resp["signature"]))
        except Exception as exc:
            raise RefusedError(f"parse+Ed25519 refused #{it.sign_count}: {exc!r}") from exc
        ok += 1
    return time.perf_counter() - t0, ok


RUNNERS: dict[str, Callable[[Fixture, Sequence[Item]], tuple[float, int]]] = {
    DEVICEBIO: run_devicebio,
    PY_WEBAUTHN: run_py_webauthn,
    FIDO2: run_fido2,
    RAW: run_raw,
    DEVICEBIO_MEMORY: run_devicebio_memory,
    PARSE_RAW: run_parse_raw,
}


def measure(fx: Fixture, rounds: int, methods: Sequence[str]) -> dict[str, list[float]]:
    """Seconds per round for each method, rounds interleaved with a rotating start."""
    n = len(fx.items)
    warm = fx.items[: min(n, 50)]
    for name in methods:  # imports, caches, first-call costs: not what we measure
        RUNNERS[name](fx, warm)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(rounds):
        shift = r % len(methods)
        for name in [*methods[shift:], *methods[:shift]]:
            gc.collect()
            seconds, ok = RUNNERS[name](fx, fx.items)
            if ok != n:
                raise RefusedError(f"{name}: accepted {ok} of {n} assertions in round {r + 1}")
            times[name].append(seconds)
            print(f"  round {r + 1}: {name:<17} {n / seconds:10.0f} /s", flush=True)
    return times


# --------------------------------------------------------------------------- profile


def profile_devicebio(fx: Fixture, top: int = 25) -> str:
    """cProfile of one devicebio pass over all N assertions (file-backed store)."""
    store, path = fresh_file_store(fx)
    prof = cProfile.Profile()
    try:
        prof.enable()
        _, ok = _devicebio_loop(fx.items, store)
        prof.disable()
    finally:
        drop_file_store(store, path)
    if ok != len(fx.items):
        raise RefusedError("devicebio refused assertions under the profiler")
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs()
    out.write("--- by own time (tottime) ---\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("--- by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """Type and device of the mount holding ``path`` (fsync cost depends on it)."""
    best, best_len = "unknown", -1
    target = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > best_len:
                    best, best_len = f"{parts[2]} ({parts[0]} on {mount})", len(mount)
    except OSError:
        pass
    return best


def machine_info(db_dir: Path) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "db_filesystem": _filesystem(db_dir),
        "libraries": {
            "fido2": _version("fido2"),
            "webauthn": _version("webauthn"),
            "PyNaCl": _version("PyNaCl"),
            "cryptography": _version("cryptography"),
            "cbor2": _version("cbor2"),
        },
    }


# --------------------------------------------------------------------------- report


def summarise(n: int, times: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "best_per_s": n / min(ts),
            "median_per_s": n / statistics.median(ts),
            "worst_per_s": n / max(ts),
        }
        for name, ts in times.items()
    }


def print_table(n: int, rounds: int, summary: dict[str, dict[str, float]]) -> None:
    print()
    print(f"Verification throughput, N={n} assertions, {rounds} interleaved rounds")
    print(f"{'verifier':<66} {'best/s':>9} {'median/s':>9} {'us/op':>8}")
    for name, row in summary.items():
        print(
            f"{LABELS[name]:<66} {row['best_per_s']:9.0f} {row['median_per_s']:9.0f}"
            f" {1e6 / row['best_per_s']:8.1f}"
        )


def ratios(summary: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    ours = summary[DEVICEBIO][key]
    out = {
        "devicebio_vs_py_webauthn": ours / summary[PY_WEBAUTHN][key],
        "devicebio_vs_fido2": ours / summary[FIDO2][key],
        "devicebio_vs_raw_ed25519": ours / summary[RAW][key],
    }
    if DEVICEBIO_MEMORY in summary:
        out["devicebio_memory_vs_py_webauthn"] = (
            summary[DEVICEBIO_MEMORY][key] / summary[PY_WEBAUTHN][key]
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="assertions (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the vault and verifier DBs live "
        "(default: a new temporary directory; must be a real disk for realistic fsync)"
    )
    parser.add_argument(
        "--no-extra", action="store_true", help="skip the two informational rows"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one devicebio pass and print it"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be positive")

    base = tempfile.mkdtemp(prefix="devicebio-bench-", dir=args.dir)
    work_dir = Path(base)
    try:
        machine = machine_info(work_dir)
        print(f"machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, "
              f"load {machine['load_average_start']}")
        print(f"python {machine['python']}, sqlite {machine['sqlite']}, "
              + ", ".join(f"{k} {v}" for k, v in machine["libraries"].items()))
        print(f"verifier DB on: {machine['db_filesystem']}")
        print(f"generating {args.n} assertions (device vault, not timed) ...", flush=True)
        t0 = time.perf_counter()
        fx = build_fixture(args.n, work_dir)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)

        methods = list(HEADLINE) if args.no_extra else [*HEADLINE, DEVICEBIO_MEMORY, PARSE_RAW]
        times = measure(fx, args.rounds, methods)
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        summary = summarise(args.n, times)
        best = ratios(summary, "best_per_s")
        median = ratios(summary, "median_per_s")
        print_table(args.n, args.rounds, summary)
        print()
        print("ratios (best round; median in brackets):")
        for key, value in best.items():
            print(f"  {key:<34} {value:7.3f}x  [{median[key]:.3f}x]")
        met = best["devicebio_vs_py_webauthn"] >= 1.0
        print(f"target devicebio >= 1.0x py_webauthn: {'MET' if met else 'NOT MET'}")
        print(f"load average start {machine['load_average_start']}, "
              f"end {machine['load_average_end']} (other jobs may share the CPUs)")

        profile_text = None
        if args.profile:
            profile_text = profile_devicebio(fx)
            print()
            print(profile_text)

        if args.json:
            result: dict[str, Any] = {
                "n": args.n,
                "rounds": args.rounds,
                "statistic": "best round (median also given)",
                "all_accepted": True,
                **{f"{name}_per_s": summary[name]["best_per_s"] for name in summary},
                **{f"{name}_median_per_s": summary[name]["median_per_s"] for name in summary},
                **best,
                "ratios_median": median,
                "target_devicebio_vs_py_webauthn": 1.0,
                "target_met": met,
                "round_seconds": times,
                "machine": machine,
                "notes": {
                    "devicebio": "file SQLiteStore, WAL, synchronous=FULL; consumes a "
                    "single-use challenge, compare-and-sets the counter, writes an audit row",
                    "fido2": "no counter check and no challenge bookkeeping (caller's job)",
                    "py_webauthn": "checks the counter given by the caller; keeps no state",
                    "timed": "verification incl. JSON parsing; generation and store set-up "
                    "excluded",
                },
            }
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.json}")
    except RefusedError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
