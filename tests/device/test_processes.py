"""Two processes sharing one vault: every read-modify-write of a counter holds the vault's lock.

Without it, two processes could both read N and both write N + 1: a PIN guess that is never
counted, or one signature counter value signed twice (the RP would refuse the second).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from devicebio.fallback import Pin
from devicebio.hazmat.credentials import Credentials, UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store.vault import RawKey, Vault

KEY = b"\x44" * 32
RP, ORIGIN = "example.com", "https://example.com"
ARGON_FAST = {"opslimit": 2, "memlimit": 8 * 1024 * 1024}


def _child(code: str, vault_dir: Path, *, ready: bool = False) -> subprocess.Popen[str]:
    # ``ready``: print a line once imported, just before opening the vault (which takes the
    # vault's lock), so the parent waits for that instead of sleeping a guessed time.
    prelude = f"""
        import json, sys
        from pathlib import Path
        from devicebio.store.vault import RawKey, Vault
        {'print("ready", flush=True)' if ready else ""}
        vault = Vault.open(Path({str(vault_dir)!r}), RawKey({KEY!r}))
    """
    script = textwrap.dedent(prelude) + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_pin_guesses_from_two_processes_are_all_counted(tmp_path: Path) -> None:
    from devicebio.errors import DeviceBioError

    vault = Vault.create(tmp_path / "v", RawKey(KEY))
    pin = Pin(vault, max_failures=3, **ARGON_FAST)
    pin.set("482193")
    with vault.exclusive():
        child = _child(
            f"""
            from devicebio.errors import DeviceBioError
            from devicebio.fallback import Pin
            try:
                Pin(vault, max_failures=3, **{ARGON_FAST!r}).verify("000000")
            except DeviceBioError as exc:
                print(exc.reason.value)
            """,
            tmp_path / "v",
            ready=True,
        )
        # The child is up and about to wait for the lock this process holds (no sleep: a
        # guessed delay is a load-dependent test).
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        assert child.poll() is None
        for _ in range(2):  # meanwhile this process makes two wrong guesses
            with contextlib.suppress(DeviceBioError):
                pin.verify("111111")
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    # the child's guess is counted on top of the two: 3 of 3, blocked (a guess made from a
    # stale read would have written 1 and handed out two free guesses)
    assert out.strip() == "pin_wrong"
    assert pin.status().failures == 3 and pin.status().blocked


def test_two_processes_never_sign_the_same_counter(tmp_path: Path) -> None:
    vault = Vault.create(tmp_path / "v", RawKey(KEY))
    face = UserVerification(Method.FACE, LivenessClaim.none(), None, True)
    Credentials(vault).register(
        rp_id=RP, origin=ORIGIN, challenge=b"r" * 32, user_name="alice", verification=face
    )
    code = f"""
        from devicebio.hazmat.credentials import Credentials, UserVerification
        from devicebio.protocol import LivenessClaim, Method
        creds = Credentials(vault)
        uv = UserVerification(Method.FACE, LivenessClaim.none(), None, True)
        counts = [
            creds.authenticate(rp_id={RP!r}, origin={ORIGIN!r}, challenge=bytes([i]) * 32,
                               verification=uv).sign_count
            for i in range(25)
        ]
        print(json.dumps(counts))
    """
    children = [_child(code, tmp_path / "v") for _ in range(2)]
    counts: list[int] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        counts += json.loads(out)
    assert sorted(counts) == list(range(1, 51))  # 50 signatures, 50 distinct counter values
