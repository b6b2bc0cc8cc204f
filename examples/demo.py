"""The main job, end to end: a device and a relying party, each through its own CLI.

Runs what a user would type: ``verifier`` (the RP) issues challenges, registers the device's
credential, verifies assertions and publishes a signed revocation list; ``devicebio`` (the
device) keeps a sealed vault, checks the PIN and signs. Every step has an expected result;
the table shows what the RP decided and why, and the exit code is non-zero if any step
deviates from what it should do.

    python examples/demo.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RP_ID, ORIGIN, USER = "bank.example", "https://bank.example", "alice"
PIN, WRONG_PIN = "480213", "999990"


@dataclass
class Step:
    name: str
    expected: str
    got: str
    why: str

    @property
    def ok(self) -> bool:
        return self.expected == self.got


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.db = str(workdir / "rp.sqlite")
        self.vault = str(workdir / "device-vault")
        self.steps: list[Step] = []
        self.env = {**os.environ, "DEVICEBIO_PASSPHRASE": "demo passphrase, use a prompt in real life"}

    def run(self, tool: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", f"{tool}.cli", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.dir,
            timeout=300,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def must(self, tool: str, *args: str, stdin: str = "") -> str:
        code, out, err = self.run(tool, *args, stdin=stdin)
        if code != 0:
            raise SystemExit(f"setup step failed: {tool} {' '.join(args)}\n{out}{err}")
        return out

    def record(self, name: str, expected: str, got: str, why: str) -> None:
        self.steps.append(Step(name, expected, got, why))

    def challenge(self, purpose: str) -> str:
        out = self.must("verifier", "challenge", "--db", self.db, "--user", USER,
                        "--purpose", purpose, "--json")
        return str(json.loads(out)["challenge"])

    def device_sign(self, challenge: str, secret: str, method: str = "pin") -> tuple[int, str, str]:
        return self.run(
            "devicebio", "authenticate", "--vault", self.vault, "--rp-id", RP_ID,
            "--origin", ORIGIN, f"--challenge={challenge}", "--method", method, stdin=secret + "\n",
        )

    def rp_verify(self, challenge: str, assertion_file: str) -> dict[str, Any]:
        code, out, err = self.run(
            "verifier", "verify", "--db", self.db, "--rp-id", RP_ID, "--origin", ORIGIN,
            f"--challenge={challenge}", "--file", assertion_file, "--issuer-key", "rp-revocation.pub",
            "--json",
        )
        try:
            return dict(json.loads(out))
        except ValueError:
            return {"ok": False, "reason": f"exit {code}: {err.strip()[:80]}"}

    def main(self) -> int:
        # Relying party set-up: its revocation-list key and a first (empty) signed list.
        self.must("verifier", "keygen", "--out", "rp-revocation.key",
                  "--public-out", "rp-revocation.pub")
        self.must("verifier", "revocation", "publish", "--db", self.db,
                  "--key", "rp-revocation.key")
        # Device set-up: a sealed vault, a PIN, recovery codes.
        self.must("devicebio", "init", "--vault", self.vault)
        self.must("devicebio", "pin", "set", "--vault", self.vault, stdin=PIN + "\n")
        self.must("devicebio", "recovery-codes", "new", "--vault", self.vault, stdin=PIN + "\n")

        # 1. Registration.
        ch = self.challenge("register")
        code, out, err = self.run(
            "devicebio", "register", "--vault", self.vault, "--rp-id", RP_ID, "--origin", ORIGIN,
            f"--challenge={ch}", "--user", USER, stdin=PIN + "\n",
        )
        (self.dir / "registration.json").write_text(out)
        code, out, err = self.run(
            "verifier", "register", "--db", self.db, "--rp-id", RP_ID, "--origin", ORIGIN,
            "--user", USER, f"--challenge={ch}", "--file", "registration.json", "--json",
        )
        res = _json(out)
        self.credential_id = res.get("credential_id", "")
        self.record("register device credential (PIN-verified)", "accepted",
                    _verdict(res), _why(res))

        # 2. Authenticate with the PIN.
        ch = self.challenge("authenticate")
        _, out, _ = self.device_sign(ch, PIN)
        (self.dir / "assertion-1.json").write_text(out)
        res = self.rp_verify(ch, "assertion-1.json")
        self.record("authenticate with PIN", "accepted", _verdict(res), _why(res))

        # 3. Replay the same assertion.
        res = self.rp_verify(ch, "assertion-1.json")
        self.record("replay the same assertion", "refused", _verdict(res), _why(res))

        # 4. Wrong PIN: the device refuses to sign at all.
        ch = self.challenge("authenticate")
        code, _, err = self.device_sign(ch, WRONG_PIN)
        self.record("wrong PIN on the device", "refused",
                    "refused" if code == 1 else f"exit {code}", err.strip().split(": ", 1)[-1])

        # 5. The RP revokes the credential (lost device) and publishes the list.
        code, out, err = self.run(
            "verifier", "revoke", "--db", self.db, "--key", "rp-revocation.key",
            f"--credential-id={self.credential_id}", "--reason", "user_key_physical_compromise",
            "--json",
        )
        listed = _json(out).get("list") or {}
        self.record("RP publishes a revocation list", "accepted",
                    "accepted" if code == 0 else "refused",
                    f"serial {listed.get('serial')}, {len(listed.get('entries', []))} entry")

        # 6. The next assertion from that credential is refused.
        _, out, _ = self.device_sign(ch, PIN)
        (self.dir / "assertion-2.json").write_text(out)
        res = self.rp_verify(ch, "assertion-2.json")
        self.record("authenticate after revocation", "refused", _verdict(res), _why(res))

        return self.report()

    def report(self) -> int:
        width = max(len(s.name) for s in self.steps)
        print(f"\n{'step':<{width}}  {'expected':<9} {'RP decided':<10} why")
        print("-" * (width + 60))
        for s in self.steps:
            mark = "ok " if s.ok else "DEVIATES"
            print(f"{s.name:<{width}}  {s.expected:<9} {s.got:<10} {s.why}  [{mark}]")
        bad = [s for s in self.steps if not s.ok]
        print(f"\n{len(self.steps) - len(bad)}/{len(self.steps)} steps as expected")
        return 1 if bad else 0


def _json(text: str) -> dict[str, Any]:
    try:
        return dict(json.loads(text))
    except ValueError:
        return {}


def _verdict(res: dict[str, Any]) -> str:
    return "accepted" if res.get("ok") else "refused"


def _why(res: dict[str, Any]) -> str:
    if not res.get("ok"):
        return f"reason: {res.get('reason')}"
    bits = [f"method {res.get('method')}", f"assurance {res.get('assurance')}"]
    if "sign_count" in res:
        bits.append(f"counter {res['sign_count']}")
    return ", ".join(bits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="where the RP database and the vault go (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="devicebio-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"devicebio demo: working in {workdir}")
    try:
        return Demo(workdir).main()
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
