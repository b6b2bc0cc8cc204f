"""Assertion verification throughput: devicebio's verifier against the WebAuthn libraries.

One run, one machine, the SAME assertions verified by:

1. ``verifier.verify_assertion`` with a file-backed ``SQLiteStore``, once with the default
   ``durability="full"`` (WAL, synchronous=FULL: every commit fsync'd) and once with
   ``durability="normal"`` (WAL, synchronous=NORMAL: survives a process crash, not a power
   cut): every assertion redeems its own single-use challenge issued beforehand with
   ``issue_challenge``, and the stored counter advances on each one;
2. python-fido2 ``Fido2Server.authenticate_complete`` (state from ``authenticate_begin``);
3. py_webauthn ``verify_authentication_response`` (given the right previous counter);
4. raw Ed25519 (``nacl.signing.VerifyKey.verify``) over the same signed messages: the floor.

Informational rows help read the gap: devicebio with an in-memory SQLite store (same
checks, no fsync); py_webauthn plus the state an RP must keep anyway (burn the challenge,
compare-and-set the counter, in ONE SQLite transaction on a file with the same WAL/FULL or
WAL/NORMAL durability, or in memory as devicebio's ``:memory:`` row), i.e. the like-for-like
comparisons; and "parse + Ed25519" (JSON, base64url, SHA-256 and the signature, with no
WebAuthn checks at all). A diagnostic pass times devicebio's SQLite statements on the
``:memory:`` path: the share of its CPU path that a verifier keeping no state never spends.

Before timing, the script counts the durable commits devicebio makes per assertion (an
SQLite trace of one short pass): 1 when ``verify_assertion`` runs inside ``store.atomic()``,
3 otherwise.

Both wall-clock and process CPU time are recorded: on a shared, loaded machine the CPU time
is the steadier measure of computation, the wall time is what a client waits (fsync included).

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
from _machine import describe_machine, machine_line
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)

from devicebio.hazmat.credentials import Credentials, UserVerification
from devicebio.protocol import (
    LivenessClaim,
    Method,
    b64url_decode,
    ed25519_public_key_from_cose,
    liveness_plan,
    liveness_sequence_hash,
)
from devicebio.store.vault import RawKey, Vault
from verifier import (
    Challenge,
    Purpose,
    SQLiteStore,
    issue_challenge,
    verify_assertion,
    verify_registration,
)
from verifier.store import CredentialRecord, Durability

RP = "example.com"
ORIGIN = "https://example.com"
USER = "alice"
# Long enough that no challenge expires while the rounds run, even on a loaded machine.
CHALLENGE_TTL = 24 * 3600.0
REQUIRED = UserVerificationRequirement.REQUIRED


def face(challenge: bytes) -> UserVerification:
    """What a real sign-in carries: a face match with a passed active liveness check, bound
    to this challenge's prompts (the verifier recomputes the sequence hash) over enough
    frames for them."""
    digest = liveness_sequence_hash(challenge, liveness_plan(challenge))
    claim = LivenessClaim("active-challenge", True, digest, 500)
    return UserVerification(Method.FACE, claim, "dlib-resnet@sha256:0123", True)


DEVICEBIO = "devicebio"
DEVICEBIO_NORMAL = "devicebio_normal"
FIDO2 = "fido2"
PY_WEBAUTHN = "py_webauthn"
RAW = "raw_ed25519"
DEVICEBIO_MEMORY = "devicebio_memory"
PY_WEBAUTHN_SQLITE = "py_webauthn_sqlite"
PY_WEBAUTHN_SQLITE_NORMAL = "py_webauthn_sqlite_normal"
PY_WEBAUTHN_MEMORY = "py_webauthn_memory"
PARSE_RAW = "parse_ed25519"
DURABLE_FLOOR = "durable_floor"
HEADLINE = (DEVICEBIO, DEVICEBIO_NORMAL, PY_WEBAUTHN, FIDO2, RAW)
LABELS = {
    DEVICEBIO: "devicebio verify_assertion (SQLite file, WAL, synchronous=FULL)",
    DEVICEBIO_NORMAL: "devicebio verify_assertion (SQLite file, WAL, synchronous=NORMAL)",
    PY_WEBAUTHN: "py_webauthn verify_authentication_response",
    FIDO2: "python-fido2 Fido2Server.authenticate_complete",
    RAW: "raw Ed25519 VerifyKey.verify (floor)",
    DEVICEBIO_MEMORY: "devicebio verify_assertion (SQLite :memory:)  [info]",
    PY_WEBAUTHN_SQLITE: "py_webauthn + RP state in SQLite (1 txn, WAL, FULL)  [info]",
    PY_WEBAUTHN_SQLITE_NORMAL: "py_webauthn + RP state in SQLite (1 txn, WAL, NORMAL)  [info]",
    PY_WEBAUTHN_MEMORY: "py_webauthn + RP state in SQLite :memory: (1 txn)  [info]",
    PARSE_RAW: "JSON + base64url + SHA-256 + Ed25519, no checks  [info]",
    DURABLE_FLOOR: "durable floor: 1 fsync'd commit + Ed25519, nothing else  [info]",
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


#: (wall-clock seconds, CPU seconds of this process, assertions accepted)
Timing = tuple[float, float, int]


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
            rp_id=RP,
            origin=ORIGIN,
            challenge=reg_challenge,
            user_name=USER,
            verification=face(reg_challenge),
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
                rp_id=RP, origin=ORIGIN, challenge=ch.value, verification=face(ch.value)
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


def fresh_file_store(fx: Fixture, durability: Durability = "full") -> tuple[SQLiteStore, Path]:
    """A new verifier DB file in the pristine state: credential at counter 0, challenges
    issued and unused. Copying the template is exactly the state issue_challenge left."""
    global _store_serial
    _store_serial += 1
    path = fx.work_dir / f"verifier-{_store_serial}.db"
    shutil.copyfile(fx.template_db, path)
    return SQLiteStore(path, durability=durability), path


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


def _devicebio_loop(items: Sequence[Item], store: SQLiteStore) -> Timing:
    ok = 0
    c0, t0 = time.process_time(), time.perf_counter()
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
    return time.perf_counter() - t0, time.process_time() - c0, ok


def run_devicebio(fx: Fixture, items: Sequence[Item]) -> Timing:
    store, path = fresh_file_store(fx, "full")
    try:
        return _devicebio_loop(items, store)
    finally:
        drop_file_store(store, path)


def run_devicebio_normal(fx: Fixture, items: Sequence[Item]) -> Timing:
    store, path = fresh_file_store(fx, "normal")
    try:
        return _devicebio_loop(items, store)
    finally:
        drop_file_store(store, path)


def commits_per_assertion(fx: Fixture, k: int = 20) -> float:
    """Durable commits devicebio makes per assertion: COMMITs, plus writes run outside any
    BEGIN (each of which is its own autocommit). Diagnostic only, not timed."""
    store, path = fresh_file_store(fx, "full")
    in_txn, commits = False, 0

    def trace(sql: str) -> None:
        nonlocal in_txn, commits
        words = sql.split(None, 2)
        head = words[0].upper() if words else ""
        second = words[1].upper() if len(words) > 1 else ""
        if head == "BEGIN":
            in_txn = True
        elif head in ("COMMIT", "END"):
            in_txn, commits = False, commits + 1
        elif head == "ROLLBACK" and second != "TO":
            in_txn = False
        elif head in ("INSERT", "UPDATE", "DELETE", "REPLACE") and not in_txn:
            commits += 1

    items = fx.items[: min(k, len(fx.items))]
    try:
        # The store keeps its connection private; tracing it is for this diagnostic only.
        store._conn.set_trace_callback(trace)
        _devicebio_loop(items, store)
    finally:
        drop_file_store(store, path)
    return commits / len(items)


class _TimedConnection:
    """An sqlite3 connection whose ``execute`` calls are timed (diagnostic only)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.seconds = 0.0
        self.statements = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        t0 = time.perf_counter()
        try:
            return self._conn.execute(sql, *args)
        finally:
            self.seconds += time.perf_counter() - t0
            self.statements += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def sql_share(fx: Fixture) -> dict[str, float]:
    """One devicebio ``:memory:`` pass over all N assertions with the store's statements
    timed: how much of the CPU path is SQLite's own work (BEGIN, redeem, credential read,
    counter compare-and-set, audit row, COMMIT), which a verifier keeping no state (plain
    py_webauthn) does not do. Diagnostic, not a timed round."""
    store = fresh_memory_store(fx)
    timed = _TimedConnection(store._conn)  # the store keeps it private: diagnostic only
    store._conn = timed  # type: ignore[assignment]
    try:
        seconds, _, ok = _devicebio_loop(fx.items, store)
    finally:
        store.close()
    if ok != len(fx.items):
        raise RefusedError("devicebio refused assertions while its statements were timed")
    n = len(fx.items)
    return {
        "us_per_assertion": seconds / n * 1e6,
        "sqlite_us_per_assertion": timed.seconds / n * 1e6,
        "statements_per_assertion": timed.statements / n,
    }


def run_devicebio_memory(fx: Fixture, items: Sequence[Item]) -> Timing:
    store = fresh_memory_store(fx)
    try:
        return _devicebio_loop(items, store)
    finally:
        store.close()


def run_fido2(fx: Fixture, items: Sequence[Item]) -> Timing:
    server, creds = fx.fido2_server, fx.fido2_credentials
    want = creds[0].credential_id
    ok = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for it in items:
        try:
            # Fido2Server takes a parsed mapping, so the RP's json.loads is on the clock.
            got = server.authenticate_complete(it.fido2_state, creds, json.loads(it.text))
        except Exception as exc:
            raise RefusedError(f"fido2 refused assertion #{it.sign_count}: {exc!r}") from exc
        ok += got.credential_id == want
    return time.perf_counter() - t0, time.process_time() - c0, ok


def run_py_webauthn(fx: Fixture, items: Sequence[Item]) -> Timing:
    key = fx.cose_key
    ok = 0
    c0, t0 = time.process_time(), time.perf_counter()
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
            raise RefusedError(f"py_webauthn refused assertion #{it.sign_count}: {exc!r}") from exc
        ok += result.new_sign_count == it.sign_count and result.user_verified
    return time.perf_counter() - t0, time.process_time() - c0, ok


_RP_SCHEMA = (
    "CREATE TABLE challenges (value BLOB PRIMARY KEY, used INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE credentials (id BLOB PRIMARY KEY, sign_count INTEGER NOT NULL) WITHOUT ROWID",
)


def _rp_database(fx: Fixture, synchronous: str | None) -> tuple[sqlite3.Connection, Path]:
    """The least state a py_webauthn RP must keep: unused challenges and the counter.
    ``synchronous=None``: in memory, as devicebio's ``:memory:`` row."""
    global _store_serial
    _store_serial += 1
    path = fx.work_dir / f"rp-{_store_serial}.db"
    conn = sqlite3.connect(":memory:" if synchronous is None else path, isolation_level=None)
    if synchronous is not None:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("BEGIN")
    for statement in _RP_SCHEMA:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO challenges (value, used) VALUES (?, 0)", [(c.value,) for c in fx.challenges]
    )
    conn.execute(
        "INSERT INTO credentials (id, sign_count) VALUES (?, 0)", (fx.record.credential_id,)
    )
    conn.execute("COMMIT")
    return conn, path


def run_py_webauthn_sqlite(fx: Fixture, items: Sequence[Item]) -> Timing:
    return _py_webauthn_sqlite(fx, items, "FULL")


def run_py_webauthn_sqlite_normal(fx: Fixture, items: Sequence[Item]) -> Timing:
    return _py_webauthn_sqlite(fx, items, "NORMAL")


def run_py_webauthn_memory(fx: Fixture, items: Sequence[Item]) -> Timing:
    return _py_webauthn_sqlite(fx, items, None)


def _py_webauthn_sqlite(fx: Fixture, items: Sequence[Item], synchronous: str | None) -> Timing:
    """py_webauthn with the durable bookkeeping it leaves to the caller, one commit each."""
    conn, path = _rp_database(fx, synchronous)
    key, cred_id = fx.cose_key, fx.record.credential_id
    ok = 0
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        for it in items:
            try:
                conn.execute("BEGIN IMMEDIATE")
                burned = conn.execute(
                    "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0",
                    (it.challenge,),
                ).rowcount
                (old,) = conn.execute(
                    "SELECT sign_count FROM credentials WHERE id = ?", (cred_id,)
                ).fetchone()
                result = webauthn.verify_authentication_response(
                    credential=it.text,
                    expected_challenge=it.challenge,
                    expected_rp_id=RP,
                    expected_origin=ORIGIN,
                    credential_public_key=key,
                    credential_current_sign_count=old,
                    require_user_verification=True,
                )
                moved = conn.execute(
                    "UPDATE credentials SET sign_count = ? WHERE id = ? AND sign_count = ?",
                    (result.new_sign_count, cred_id, old),
                ).rowcount
                conn.execute("COMMIT")
            except Exception as exc:
                conn.execute("ROLLBACK")
                raise RefusedError(
                    f"py_webauthn+SQLite refused assertion #{it.sign_count}: {exc!r}"
                ) from exc
            ok += burned == 1 and moved == 1 and result.new_sign_count == it.sign_count
        return time.perf_counter() - t0, time.process_time() - c0, ok
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def run_raw(fx: Fixture, items: Sequence[Item]) -> Timing:
    verify = nacl.signing.VerifyKey(fx.raw_public_key).verify
    ok = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for it in items:
        try:
            verify(it.message, it.signature)
        except Exception as exc:
            raise RefusedError(f"Ed25519 refused assertion #{it.sign_count}: {exc!r}") from exc
        ok += 1
    return time.perf_counter() - t0, time.process_time() - c0, ok


def run_parse_raw(fx: Fixture, items: Sequence[Item]) -> Timing:
    verify = nacl.signing.VerifyKey(fx.raw_public_key).verify
    sha256 = hashlib.sha256
    ok = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for it in items:
        try:
            resp = json.loads(it.text)["response"]
            auth_data = b64url_decode(resp["authenticatorData"])
            client_data = b64url_decode(resp["clientDataJSON"])
            verify(auth_data + sha256(client_data).digest(), b64url_decode(resp["signature"]))
        except Exception as exc:
            raise RefusedError(f"parse+Ed25519 refused #{it.sign_count}: {exc!r}") from exc
        ok += 1
    return time.perf_counter() - t0, time.process_time() - c0, ok


def run_durable_floor(fx: Fixture, items: Sequence[Item]) -> Timing:
    """The floor of any verifier that checks the signature and makes its state durable
    before answering: the Ed25519 verification and one fsync'd commit (burning the
    challenge), with no parsing and no other check. If this row is slower than py_webauthn,
    no verifier with durable per-assertion state can match py_webauthn on this machine."""
    conn, path = _rp_database(fx, "FULL")
    verify = nacl.signing.VerifyKey(fx.raw_public_key).verify
    ok = 0
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        for it in items:
            verify(it.message, it.signature)
            conn.execute("BEGIN IMMEDIATE")
            ok += conn.execute(
                "UPDATE challenges SET used = 1 WHERE value = ? AND used = 0", (it.challenge,)
            ).rowcount
            conn.execute("COMMIT")
        return time.perf_counter() - t0, time.process_time() - c0, ok
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


RUNNERS: dict[str, Callable[[Fixture, Sequence[Item]], Timing]] = {
    DEVICEBIO: run_devicebio,
    DEVICEBIO_NORMAL: run_devicebio_normal,
    PY_WEBAUTHN: run_py_webauthn,
    FIDO2: run_fido2,
    RAW: run_raw,
    DEVICEBIO_MEMORY: run_devicebio_memory,
    PY_WEBAUTHN_SQLITE: run_py_webauthn_sqlite,
    PY_WEBAUTHN_SQLITE_NORMAL: run_py_webauthn_sqlite_normal,
    PY_WEBAUTHN_MEMORY: run_py_webauthn_memory,
    PARSE_RAW: run_parse_raw,
    DURABLE_FLOOR: run_durable_floor,
}


def measure(
    fx: Fixture, rounds: int, methods: Sequence[str]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per round for each method; rounds interleaved, start rotated."""
    n = len(fx.items)
    warm = fx.items[: min(n, 50)]
    for name in methods:  # imports, caches, first-call costs: not what we measure
        RUNNERS[name](fx, warm)
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(rounds):
        shift = r % len(methods)
        for name in [*methods[shift:], *methods[:shift]]:
            gc.collect()
            seconds, cpu_seconds, ok = RUNNERS[name](fx, fx.items)
            if ok != n:
                raise RefusedError(f"{name}: accepted {ok} of {n} assertions in round {r + 1}")
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            print(
                f"  round {r + 1}: {name:<19} {n / seconds:8.0f} /s wall"
                f"  {n / cpu_seconds:8.0f} /s CPU",
                flush=True,
            )
    return wall, cpu


# --------------------------------------------------------------------------- profile


def profile_devicebio(fx: Fixture, top: int = 25) -> str:
    """cProfile of one devicebio pass over all N assertions (file-backed store)."""
    store, path = fresh_file_store(fx, "full")
    prof = cProfile.Profile()
    try:
        prof.enable()
        _, _, ok = _devicebio_loop(fx.items, store)
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


#: The libraries the verifiers' speed depends on, reported with the machine.
LIBRARIES = ("fido2", "webauthn", "PyNaCl", "cryptography", "cbor2")


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
    """The shared machine description (benchmarks/_machine.py) with the libraries above, plus
    what only this benchmark depends on: SQLite's version and the filesystem under the
    databases. Its load average is the one at the start; the end's is added after the run."""
    machine = describe_machine(LIBRARIES)
    machine["load_average_start"] = machine.pop("load_average")
    machine["implementation"] = platform.python_implementation()
    machine["sqlite"] = sqlite3.sqlite_version
    machine["db_filesystem"] = _filesystem(db_dir)
    return machine


# --------------------------------------------------------------------------- report


def summarise(
    n: int, wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> dict[str, dict[str, float]]:
    return {
        name: {
            "best_per_s": n / min(wall[name]),
            "median_per_s": n / statistics.median(wall[name]),
            "worst_per_s": n / max(wall[name]),
            "cpu_best_per_s": n / min(cpu[name]),
            "cpu_median_per_s": n / statistics.median(cpu[name]),
        }
        for name in wall
    }


def print_table(n: int, rounds: int, summary: dict[str, dict[str, float]]) -> None:
    print()
    print(f"Verification throughput, N={n} assertions, {rounds} interleaved rounds")
    print(
        "(wall = assertions per wall-clock second, best and median round; "
        "CPU = per CPU-second of this process, best round)"
    )
    print(f"{'verifier':<66} {'best/s':>8} {'median/s':>8} {'us/op':>8} {'CPU/s':>8}")
    for name, row in summary.items():
        print(
            f"{LABELS[name]:<66} {row['best_per_s']:8.0f} {row['median_per_s']:8.0f}"
            f" {1e6 / row['best_per_s']:8.0f} {row['cpu_best_per_s']:8.0f}"
        )


def ratios(summary: dict[str, dict[str, float]], key: str) -> dict[str, float]:
    ours = summary[DEVICEBIO][key]
    out = {
        "devicebio_vs_py_webauthn": ours / summary[PY_WEBAUTHN][key],
        "devicebio_vs_fido2": ours / summary[FIDO2][key],
        "devicebio_vs_raw_ed25519": ours / summary[RAW][key],
    }
    if DEVICEBIO_NORMAL in summary:
        normal = summary[DEVICEBIO_NORMAL][key]
        out["devicebio_normal_vs_py_webauthn"] = normal / summary[PY_WEBAUTHN][key]
        if PY_WEBAUTHN_SQLITE_NORMAL in summary:
            out["devicebio_normal_vs_py_webauthn_sqlite_normal"] = (
                normal / summary[PY_WEBAUTHN_SQLITE_NORMAL][key]
            )
    if PY_WEBAUTHN_SQLITE in summary:
        out["devicebio_vs_py_webauthn_sqlite"] = ours / summary[PY_WEBAUTHN_SQLITE][key]
    if DEVICEBIO_MEMORY in summary:
        out["devicebio_memory_vs_py_webauthn"] = (
            summary[DEVICEBIO_MEMORY][key] / summary[PY_WEBAUTHN][key]
        )
    if DEVICEBIO_MEMORY in summary and PY_WEBAUTHN_MEMORY in summary:
        out["devicebio_memory_vs_py_webauthn_memory"] = (
            summary[DEVICEBIO_MEMORY][key] / summary[PY_WEBAUTHN_MEMORY][key]
        )
    if DURABLE_FLOOR in summary:
        out["durable_floor_vs_py_webauthn"] = (
            summary[DURABLE_FLOOR][key] / summary[PY_WEBAUTHN][key]
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="assertions (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the results as JSON")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="parent of the temporary vault and databases (default: the system temp dir; "
        "use a real disk, not tmpfs, for realistic fsync costs)",
    )
    parser.add_argument("--no-extra", action="store_true", help="only the four headline verifiers")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one devicebio pass and print it"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be positive")

    work_dir = Path(tempfile.mkdtemp(prefix="devicebio-bench-", dir=args.dir))
    try:
        machine = machine_info(work_dir)
        print(machine_line({**machine, "load_average": machine["load_average_start"]}))
        print(f"sqlite {machine['sqlite']}")
        print(f"databases on: {machine['db_filesystem']}")
        print(f"generating {args.n} assertions (device vault, not timed) ...", flush=True)
        t0 = time.perf_counter()
        fx = build_fixture(args.n, work_dir)
        print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)

        methods = list(HEADLINE)
        if not args.no_extra:
            methods += [
                DEVICEBIO_MEMORY,
                PY_WEBAUTHN_MEMORY,
                PY_WEBAUTHN_SQLITE,
                PY_WEBAUTHN_SQLITE_NORMAL,
                PARSE_RAW,
                DURABLE_FLOOR,
            ]
        commits = commits_per_assertion(fx)
        print(f"devicebio durable commits per assertion: {commits:g}", flush=True)
        sql = sql_share(fx)
        print(
            f"devicebio :memory: pass with its statements timed: {sql['us_per_assertion']:.0f}"
            f" us per assertion, {sql['sqlite_us_per_assertion']:.0f} us of it in"
            f" {sql['statements_per_assertion']:g} SQLite statements (plain py_webauthn"
            " keeps no state, so runs none)",
            flush=True,
        )
        wall, cpu = measure(fx, args.rounds, methods)
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        summary = summarise(args.n, wall, cpu)
        best = ratios(summary, "best_per_s")
        median = ratios(summary, "median_per_s")
        cpu_best = ratios(summary, "cpu_best_per_s")
        print_table(args.n, args.rounds, summary)
        print()
        print("ratios (wall, best round) [wall, median round] {CPU, best round}:")
        for key, value in best.items():
            print(f"  {key:<34} {value:7.3f}x  [{median[key]:.3f}x]  {{{cpu_best[key]:.3f}x}}")
        met = best["devicebio_vs_py_webauthn"] >= 1.0
        print(f"target devicebio >= 1.0x py_webauthn (wall, best): {'MET' if met else 'NOT MET'}")
        met_normal = best["devicebio_normal_vs_py_webauthn"] >= 1.0
        print(f"  with durability='normal' (not the default): {'MET' if met_normal else 'NOT MET'}")
        print(
            f"load average start {machine['load_average_start']}, end "
            f"{machine['load_average_end']} on {machine['cores_usable']} CPUs: other jobs "
            "share this machine, so single rounds vary; compare within one run only"
        )

        if args.profile:
            print()
            print(profile_devicebio(fx))

        if args.json:
            result: dict[str, Any] = {
                "n": args.n,
                "rounds": args.rounds,
                "statistic": "best round by wall clock; medians and CPU-time figures also given",
                "all_accepted": True,
                **{f"{name}_per_s": summary[name]["best_per_s"] for name in summary},
                **best,
                "ratios_median": median,
                "ratios_cpu": cpu_best,
                "target_devicebio_vs_py_webauthn": 1.0,
                "target_met": met,
                "target_met_normal_durability": met_normal,
                "devicebio_commits_per_assertion": commits,
                "devicebio_memory_sqlite": sql,
                "per_verifier": summary,
                "round_wall_seconds": wall,
                "round_cpu_seconds": cpu,
                "machine": machine,
                "notes": {
                    DEVICEBIO: "file SQLiteStore(durability='full'): WAL, synchronous=FULL; "
                    "redeems a single-use challenge, compare-and-sets the counter, writes an "
                    f"audit row ({commits:g} durable commits per assertion)",
                    DEVICEBIO_NORMAL: "as devicebio with durability='normal' (WAL, "
                    "synchronous=NORMAL): survives a process crash; the last commits can be "
                    "lost on power loss or an OS crash",
                    FIDO2: "no counter check and no challenge bookkeeping (left to the caller)",
                    PY_WEBAUTHN: "checks the counter the caller passes; keeps no state",
                    PY_WEBAUTHN_SQLITE: "py_webauthn + challenge burn + counter CAS in one "
                    "SQLite transaction (WAL, FULL): the like-for-like RP",
                    PY_WEBAUTHN_SQLITE_NORMAL: "as py_webauthn_sqlite with synchronous=NORMAL",
                    PY_WEBAUTHN_MEMORY: "as py_webauthn_sqlite in an in-memory database: "
                    "the like-for-like peer of devicebio_memory (same CPU work, no fsync)",
                    DURABLE_FLOOR: "Ed25519 + one fsync'd commit per assertion, nothing else: "
                    "the floor of any verifier whose state is durable before it answers",
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
