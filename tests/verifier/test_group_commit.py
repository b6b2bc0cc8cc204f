"""Group commit in ``SQLiteStore``: concurrent verifications share one durable commit.

Everything is real: a devicebio vault signs the assertions, ``verify_assertion`` checks them
against a SQLite file with ``synchronous=FULL``, on real threads. The overlap is made
deterministic, not left to timing: the test holds an ``atomic()`` block open, starts the
threads, and leaves the block only once every thread has counted itself in the store's queue
(the count the store's own commit decision reads). From then on which thread runs when is up
to the scheduler, and the outcomes checked do not depend on it.
"""

from __future__ import annotations

import math
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.claims import face

from devicebio.hazmat.credentials import Credentials
from devicebio.store.vault import RawKey, Vault
from verifier import (
    Purpose,
    Reason,
    SQLiteStore,
    VerifiedAssertion,
    VerifierError,
    issue_challenge,
    verify_assertion,
    verify_registration,
)
from verifier.store import sqlite as sqlite_module

RP = "example.com"
ORIGIN = "https://example.com"


class Bank:
    """A relying party on a SQLite file, and one device holding one credential per user."""

    def __init__(self, tmp_path: Path, users: int) -> None:
        self.path = tmp_path / "rp.db"
        self.store = SQLiteStore(self.path)
        self.creds = Credentials(Vault.create(tmp_path / "vault", RawKey(b"\x6b" * 32)))
        self.ids: dict[str, bytes] = {}
        for i in range(users):
            user = f"user{i}"
            ch = issue_challenge(self.store, user=user, purpose=Purpose.REGISTER).value
            reg = self.creds.register(
                rp_id=RP, origin=ORIGIN, challenge=ch, user_name=user, verification=face(ch)
            )
            self.ids[user] = verify_registration(
                credential=reg.to_json(),
                expected_challenge=ch,
                expected_origin=ORIGIN,
                expected_rp_id=RP,
                store=self.store,
                user=user,
            ).record.credential_id

    def signed(self, user: str) -> tuple[bytes, Any]:
        """A fresh challenge for ``user`` and the device's assertion over it."""
        ch = issue_challenge(self.store, user=user, purpose=Purpose.AUTHENTICATE).value
        assertion = self.creds.authenticate(
            rp_id=RP,
            origin=ORIGIN,
            challenge=ch,
            verification=face(ch),
            credential_id=self.ids[user],
        )
        return ch, assertion.to_json()

    def verifying(self, ch: bytes, credential: Any) -> Callable[[], VerifiedAssertion]:
        return lambda: verify_assertion(
            credential=credential,
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=self.store,
        )

    def reopened(self) -> SQLiteStore:
        """Another connection to the file: what a restarted verifier would find."""
        return SQLiteStore(self.path)


def _commits(store: SQLiteStore) -> Callable[[], int]:
    """How many COMMITs ``store``'s connection runs from now on (an SQLite trace; test only)."""
    count = [0]

    def trace(sql: str) -> None:
        if sql.split(None, 1)[0].upper() == "COMMIT":
            count[0] += 1

    store._conn.set_trace_callback(trace)
    return lambda: count[0]


def _queued_behind_a_block(
    store: SQLiteStore, calls: list[Callable[[], Any]], inside: Callable[[], None] = lambda: None
) -> tuple[BaseException | None, list[Any]]:
    """Run each call on its own thread, all queued behind one ``atomic()`` block of this
    thread: the block (which runs ``inside``) ends only once every thread has counted itself
    in the store's queue, so they all join the block's batch. Returns the block's own error
    (``None`` if it ended cleanly) and each call's result or ``VerifierError``."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except VerifierError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    own: BaseException | None = None
    try:
        with store.atomic():
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while store._queued < len(calls):
                assert time.monotonic() < deadline, "threads never queued"
                time.sleep(0.001)
            inside()
    except VerifierError as exc:
        own = exc
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    return own, results


def test_concurrent_verifications_share_one_commit_and_all_are_answered(
    tmp_path: Path,
) -> None:
    bank = Bank(tmp_path, users=12)
    signed = [bank.signed(f"user{i}") for i in range(12)]
    commits = _commits(bank.store)
    own, results = _queued_behind_a_block(bank.store, [bank.verifying(*s) for s in signed])
    assert own is None
    assert all(isinstance(r, VerifiedAssertion) for r in results), results
    assert [r.user for r in results] == [f"user{i}" for i in range(12)]
    assert commits() == 1  # twelve verifications (and the block) in one durable commit
    with bank.reopened() as other:
        for r in results:
            assert other.get_credential(r.credential_id).sign_count == r.new_sign_count >= 1
        for ch, _ in signed:
            assert other.use_challenge(ch)[3] is True  # burnt, durably
        assert [e[1] for e in other.audit_events()].count("assertion_verified") == 12


def test_a_long_queue_is_committed_in_batches_of_at_most_max_batch(tmp_path: Path) -> None:
    n = sqlite_module._MAX_BATCH + 8
    bank = Bank(tmp_path, users=n)
    signed = [bank.signed(f"user{i}") for i in range(n)]
    commits = _commits(bank.store)
    own, results = _queued_behind_a_block(bank.store, [bank.verifying(*s) for s in signed])
    assert own is None
    assert all(isinstance(r, VerifiedAssertion) for r in results)
    # The block and n verifications, at most _MAX_BATCH to a commit: the first of a long
    # queue does not wait for the whole queue.
    assert commits() == math.ceil((n + 1) / sqlite_module._MAX_BATCH) == 2


def test_a_lone_caller_commits_at_once(tmp_path: Path) -> None:
    # Nobody queued: every verification commits when it ends, waiting for no one (a block
    # that waited here would wait for ever: nobody else comes to commit it).
    bank = Bank(tmp_path, users=1)
    signed = [bank.signed("user0") for _ in range(3)]
    commits = _commits(bank.store)
    for k, (ch, cred) in enumerate(signed, 1):
        assert bank.verifying(ch, cred)().new_sign_count >= k
        assert commits() == k
        with bank.reopened() as other:
            assert other.use_challenge(ch)[3] is True


def test_the_same_challenge_raced_in_one_batch_is_accepted_exactly_once(tmp_path: Path) -> None:
    bank = Bank(tmp_path, users=1)
    ch, cred = bank.signed("user0")
    commits = _commits(bank.store)
    own, results = _queued_behind_a_block(bank.store, [bank.verifying(ch, cred)] * 10)
    assert own is None
    accepted = [r for r in results if isinstance(r, VerifiedAssertion)]
    refused = [r for r in results if isinstance(r, VerifierError)]
    assert len(accepted) == 1 and len(refused) == 9
    assert {e.reason for e in refused} == {Reason.CHALLENGE_REUSED}
    assert commits() == 1
    with bank.reopened() as other:
        assert other.get_credential(bank.ids["user0"]).sign_count == accepted[0].new_sign_count
        events = [e[1] for e in other.audit_events()]
        assert events.count("assertion_verified") == 1
        assert events.count("assertion_refused") == 9


def test_a_stale_counter_in_the_batch_does_not_undo_the_others(tmp_path: Path) -> None:
    bank = Bank(tmp_path, users=5)
    old = bank.signed("user0")  # signed first: a lower counter than the next one
    newer = bank.signed("user0")
    done = bank.verifying(*newer)()
    others = [bank.signed(f"user{i}") for i in range(1, 5)]
    commits = _commits(bank.store)
    own, results = _queued_behind_a_block(
        bank.store, [bank.verifying(*old)] + [bank.verifying(*s) for s in others]
    )
    assert own is None
    assert isinstance(results[0], VerifierError)
    assert results[0].reason is Reason.COUNTER_REGRESSION
    assert all(isinstance(r, VerifiedAssertion) for r in results[1:])
    assert commits() == 1
    with bank.reopened() as other:
        assert other.get_credential(bank.ids["user0"]).sign_count == done.new_sign_count
        for r in results[1:]:
            assert other.get_credential(r.credential_id).sign_count == r.new_sign_count
        # The refused one's challenge stays burnt, and its refusal is on the record.
        assert other.use_challenge(old[0])[3] is True
        refusals = [e[2] for e in other.audit_events() if e[1] == "assertion_refused"]
        assert [f["reason"] for f in refusals] == ["counter_regression"]


@pytest.fixture
def file_size_limit() -> Any:
    """Set the process's file size limit (RLIMIT_FSIZE): writes past it fail with EFBIG,
    which SQLite reports as a failed write, as on a full disk. Restored afterwards."""
    saved = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(size: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, saved[1]))

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, saved)


def test_a_failed_shared_commit_fails_every_member_closed_and_keeps_earlier_data(
    tmp_path: Path, file_size_limit: Any
) -> None:
    bank = Bank(tmp_path, users=6)
    first = [bank.verifying(*bank.signed(f"user{i}"))() for i in range(6)]
    signed = [bank.signed(f"user{i}") for i in range(6)]
    before = bank.store.audit_events()
    assert [e[1] for e in before][-6:] == ["assertion_verified"] * 6
    wal = Path(f"{bank.path}-wal")
    plain_write: list[Any] = []

    def plain_writer() -> None:
        # A call outside any block that meets the open batch: it must not answer before
        # the batch's commit, and so must fail with it.
        try:
            bank.store.audit("plain write")
            plain_write.append("ok")
        except VerifierError as exc:
            plain_write.append(exc.reason)

    plain = threading.Thread(target=plain_writer)

    def inside() -> None:
        bank.store.audit("the block's own write")
        plain.start()
        deadline = time.monotonic() + 60
        while bank.store._queued < len(signed) + 1:  # the plain call is queued too
            assert time.monotonic() < deadline, "the plain call never queued"
            time.sleep(0.001)
        # The WAL may not grow: the shared COMMIT cannot write its frames ("disk full").
        file_size_limit(wal.stat().st_size)

    try:
        own, results = _queued_behind_a_block(
            bank.store, [bank.verifying(*s) for s in signed], inside
        )
        plain.join(60)
    finally:
        file_size_limit(resource.RLIM_INFINITY)
    assert isinstance(own, VerifierError) and own.reason is Reason.STORAGE
    assert all(isinstance(r, VerifierError) for r in results), results
    assert {r.reason for r in results} == {Reason.STORAGE}
    assert plain_write == [Reason.STORAGE]
    with bank.reopened() as other:
        # What was committed before is intact; nothing of the failed batch is.
        for r in first:
            assert other.get_credential(r.credential_id).sign_count == r.new_sign_count
        assert other.audit_events() == before
    # Nobody was told "accepted", and the challenges were not burnt: the same assertions
    # go through once the disk has room, and the store carries on.
    again = [bank.verifying(*s)() for s in signed]
    assert [r.new_sign_count for r in again] == [r.new_sign_count + 1 for r in first]
