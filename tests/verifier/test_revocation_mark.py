"""Restoring the RP database must not un-revoke anything (issue 10, item 7).

The attack: the operator (or malware with write access to the database, or a backup job)
puts back an older copy of the database. Before the serial mark, the list in force went back
to the older one (the revoked credential worked again) and the next routine publish signed a
SECOND, different list with a serial already published. The highest serial ever installed now
lives outside the database too (the serial mark beside the key, or a verifier's own mark
file), so the publisher and the verifier both notice.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from verifier import cli
from verifier.errors import Reason, VerifierError
from verifier.revocation import check_not_revoked, publish
from verifier.revocation.codec import decode_unverified
from verifier.revocation.mark import SerialMark
from verifier.store import SQLiteStore

CRED = b"\x07" * 16
CRED_TEXT = "BwcHBwcHBwcHBwcHBwcHBw"


def _listed(db: Path) -> tuple[int, bool]:
    store = SQLiteStore(db)
    try:
        state = store.get_revocation_state()
    finally:
        store.close()
    assert state is not None
    rl = decode_unverified(state[1])
    return rl.serial, any(e.value == CRED for e in rl.entries)


def _cli(*args: str | Path) -> int:
    return cli.main([str(a) for a in args])


def test_a_restored_database_is_not_un_revoked_by_the_next_publish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, key = tmp_path / "v.db", tmp_path / "rl-key.json"
    assert _cli("keygen", "--out", key) == 0
    assert _cli("revocation", "publish", "--db", db, "--key", key) == 0  # serial 1, empty
    shutil.copy(db, tmp_path / "backup.db")  # last night's backup
    assert (
        _cli(
            "revoke",
            "--db",
            db,
            "--key",
            key,
            f"--credential-id={CRED_TEXT}",
            "--reason",
            "user_key_remote_compromise",
            "--out",
            tmp_path / "serial2.cbor",
        )
        == 0
    )
    assert _listed(db) == (2, True)
    serial2 = (tmp_path / "serial2.cbor").read_bytes()

    shutil.copy(tmp_path / "backup.db", db)  # the restore
    capsys.readouterr()
    # The next routine renewal: it must neither reuse serial 2 for a different list nor
    # leave the credential un-revoked.
    _cli("revocation", "publish", "--db", db, "--key", key, "--out", tmp_path / "next.cbor")
    serial, revoked = _listed(db)
    assert revoked, "the restore un-revoked the credential"
    assert serial > 2
    published = (tmp_path / "next.cbor").read_bytes()
    assert published != serial2 and decode_unverified(published).serial > 2


def test_the_verifier_refuses_a_restored_older_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A relying party that only verifies (it has the issuer's public key) keeps its own mark.
    db, key, pub = tmp_path / "v.db", tmp_path / "rl-key.json", tmp_path / "rl.pub"
    issuer_db = tmp_path / "issuer.db"
    mark = tmp_path / "revocation.mark"
    assert _cli("keygen", "--out", key, "--public-out", pub) == 0
    assert (
        _cli(
            "revocation", "publish", "--db", issuer_db, "--key", key, "--out", tmp_path / "l1.cbor"
        )
        == 0
    )
    assert (
        _cli(
            "revoke",
            "--db",
            issuer_db,
            "--key",
            key,
            f"--credential-id={CRED_TEXT}",
            "--reason",
            "user_key_remote_compromise",
            "--out",
            tmp_path / "l2.cbor",
        )
        == 0
    )
    install = ("revocation", "install", "--db", db, "--issuer-key", pub, "--serial-mark", mark)
    assert _cli(*install, tmp_path / "l1.cbor") == 0
    shutil.copy(db, tmp_path / "backup.db")
    assert _cli(*install, tmp_path / "l2.cbor") == 0
    shutil.copy(tmp_path / "backup.db", db)  # the restore: serial 1 in force again
    capsys.readouterr()

    from verifier.keys import load_verify_key
    from verifier.revocation.mark import SerialMark

    public = load_verify_key(pub)
    store = SerialMark(mark, public).guard(SQLiteStore(db))
    try:
        with pytest.raises(VerifierError) as err:
            check_not_revoked(store, public, credential_id=CRED, device_id=None, model_id=None)
        assert err.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    finally:
        store.close()
    # Installing the older list again is refused; the newest one heals the database.
    assert _cli(*install, tmp_path / "l1.cbor") == 1
    assert "revocation_list_rollback" in capsys.readouterr().err
    assert _cli(*install, tmp_path / "l2.cbor") == 0
    assert _listed(db) == (2, True)


def test_the_server_heals_a_restored_database_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    TestClient = pytest.importorskip(
        "starlette.testclient", reason="the server tests need the [server] and [test] extras"
    ).TestClient

    from verifier.server import create_app

    db, key = tmp_path / "v.db", tmp_path / "rl-key.json"
    assert _cli("keygen", "--out", key) == 0
    token = "t" * 32

    def app() -> object:
        return create_app(
            db=db,
            rp_id="example.com",
            origin="https://example.com",
            revocation_key_file=key,
            admin_token=token,
        )

    with TestClient(app(), base_url="http://127.0.0.1") as c:  # type: ignore[arg-type]
        shutil.copy(db, tmp_path / "backup.db")
        r = c.post(
            "/revoke",
            json={"credential_id": CRED_TEXT, "reason": "user_key_remote_compromise"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200 and r.json()["serial"] == 2, r.text
    shutil.copy(tmp_path / "backup.db", db)
    with TestClient(app(), base_url="http://127.0.0.1") as c:  # type: ignore[arg-type]
        body = c.get("/revocation").json()
    assert body["serial"] == 3  # never a second serial 2
    assert [e["value"] for e in body["list"]["entries"]] == [CRED_TEXT]


def test_a_missing_mark_beside_a_used_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, key = tmp_path / "v.db", tmp_path / "rl-key.json"
    assert _cli("keygen", "--out", key) == 0
    assert _cli("revocation", "publish", "--db", db, "--key", key) == 0
    mark = tmp_path / "rl-key.json.serial"
    assert mark.exists()
    mark.unlink()  # deleted: indistinguishable from a mark that never was
    capsys.readouterr()
    assert _cli("revocation", "publish", "--db", db, "--key", key) == 1
    assert "revocation_list_rollback" in capsys.readouterr().err
    # A key from before marks existed adopts the list in force on purpose.
    assert _cli("revocation", "publish", "--db", db, "--key", key, "--adopt-mark") == 0
    assert mark.exists() and _listed(db)[0] == 2


def test_the_mark_guards_either_backend(backend: Any, tmp_path: Path) -> None:
    # The same rules on SQLite and PostgreSQL: a database that lost its lists (restored to an
    # empty copy) is refused by the check, and the publisher heals it before going on.
    key = nacl.signing.SigningKey(b"\x31" * 32)
    mark = SerialMark(tmp_path / "rl.serial", key.verify_key)
    first = backend.open()
    publish(first, key, mark=mark, clock=lambda: T0)
    done = publish(first, key, _entry(), mark=mark, clock=lambda: T0 + 1)
    assert done.list.serial == 2 and mark.read() == (2, done.data)
    for table in ("revocation",):  # the restore: the list rows are gone
        _wipe(backend, first, table)
    restored = mark.guard(backend.open())
    with pytest.raises(VerifierError) as err:
        check_not_revoked(
            restored, key.verify_key, credential_id=CRED, device_id=None, model_id=None, now=T0 + 2
        )
    assert err.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    healed = publish(restored, key, mark=mark, clock=lambda: T0 + 3)
    assert healed.list.serial == 3 and [e.value for e in healed.list.entries] == [CRED]
    with pytest.raises(VerifierError) as err:
        check_not_revoked(
            restored, key.verify_key, credential_id=CRED, device_id=None, model_id=None, now=T0 + 4
        )
    assert err.value.reason is Reason.REVOKED


T0 = 1_800_000_000


def _entry() -> Any:
    from verifier.revocation import EntryKind, RevocationEntry, RevocationReason

    return RevocationEntry(EntryKind.CREDENTIAL_ID, CRED, RevocationReason.REVOKED, T0)


def _wipe(backend: Any, store: Any, table: str) -> None:
    if backend.name == "sqlite":
        with store._lock:
            store._conn.execute(f"DELETE FROM {table}")
            store._conn.commit()
    else:
        import psycopg

        with psycopg.connect(backend.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {table}")
