"""The main job, end to end: a device and a relying party talking over HTTP.

The relying party is the reference service (``verifier serve``: Starlette + uvicorn, SQLite,
127.0.0.1 only) in its own process. The device is this process, using the SDK as an app would:
a sealed vault, a PIN, real face models, real photos. Every step has an expected result; the
table shows what the device and the relying party decided and why, and the exit code is
non-zero if any step deviates.

    python examples/demo.py                       # faces from ../shared/data/lfw
    python examples/demo.py --faces DIR           # DIR/<person>/*.jpg, two people or more
    python examples/demo.py --camera              # enrol and authenticate you, live
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RP_ID, ORIGIN = "bank.example", "https://bank.example"
PIN = "480213"
# A refused genuine person does what the app asks: tries again, on a fresh challenge. The
# liveness refuses a few per cent of genuine attempts (BPCER, docs/evaluation.md), so one
# refusal now and then is the product working as measured; three in a row would be a finding.
GENUINE_ATTEMPTS = 3
PERSON_A, PERSON_B = "Colin_Powell", "Tony_Blair"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    name: str
    expected: str
    got: str
    why: str

    @property
    def ok(self) -> bool:
        return self.expected == self.got


class RelyingParty:
    """The reference RP service in a child process, and a tiny JSON client for it."""

    def __init__(self, workdir: Path, rp_id: str = RP_ID, origin: str = ORIGIN) -> None:
        self.rp_id, self.origin = rp_id, origin
        self.token = secrets.token_urlsafe(24)
        env = {**os.environ, "VERIFIER_ADMIN_TOKEN": self.token}
        key = workdir / "rp-revocation.key"
        _run([sys.executable, "-m", "verifier.cli", "keygen", "--out", str(key)], env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", "serve", "--db", str(workdir / "rp.sqlite"),
             "--rp-id", rp_id, "--origin", origin, "--key", str(key), "--json"],
            stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("the relying-party service did not start")
        self.url = json.loads(line)["url"]

    def post(self, path: str, body: dict[str, Any], admin: bool = False) -> dict[str, Any]:
        return self._call("POST", path, json.dumps(body).encode(), admin)

    def get(self, path: str, admin: bool = False) -> dict[str, Any]:
        return self._call("GET", path, None, admin)

    def _call(self, method: str, path: str, data: bytes | None, admin: bool) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if admin:
            headers["Authorization"] = f"Bearer {self.token}"
        # The URL is the child service's own loopback address, never user input.
        url = self.url + path
        request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as err:
            return dict(json.loads(err.read() or b"{}"))

    def challenge(self, user: str, purpose: str) -> bytes:
        from devicebio.protocol import b64url_decode

        answer = self.post("/challenge", {"user": user, "purpose": purpose}, admin=True)
        return b64url_decode(answer["challenge"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def video_dir() -> Path:
    """Where the recorded face videos are (``DEVICEBIO_VIDEO`` or the shared data folder)."""
    return Path(os.environ.get("DEVICEBIO_VIDEO", REPO.parent / "shared" / "data" / "video"))


class LiveCamera:
    """Recorded face video standing in for a live camera: a person answers each liveness
    prompt as it appears (devicebio.evaluation's performer). ``on_prompt`` goes to the
    Authenticator; ``session(name, challenge)`` is the camera for one attempt."""

    def __init__(self, videos: Path, seed: int = 7) -> None:
        import numpy as np

        from devicebio.evaluation import liveness as ev

        self.ev = ev
        annotation = ev.load_annotation()
        self.people = ev.build_people(annotation)
        self.cache = ev.FrameCache(videos, annotation)
        self.rng = np.random.default_rng(seed)
        self._performer: Any = None

    def neutral(self, name: str) -> list[Any]:
        """The person's neutral frames (what enrolment uses)."""
        return [self.cache.get(*r) for c in self.people[name].neutral for r in c.refs()]

    def horizon(self, challenge: bytes) -> float:
        from devicebio.protocol import liveness_plan

        return float(self.ev.horizon(liveness_plan(challenge)))

    def on_prompt(self, step: Any) -> None:
        self._performer.on_prompt(step)

    @staticmethod
    def until_live(attempt: Any, result_of: Any = lambda r: r) -> tuple[Any, int]:
        """Run ``attempt()`` (fresh challenge, fresh capture) again while the device refuses
        it for liveness, at most GENUINE_ATTEMPTS times; returns its last value and the count."""
        from devicebio import OutcomeCode

        for tries in range(1, GENUINE_ATTEMPTS + 1):
            value = attempt()
            result = result_of(value)
            if (
                result.assertion is not None
                or result.outcome.code is not OutcomeCode.LIVENESS_FAILED
                or tries == GENUINE_ATTEMPTS
            ):
                break
            print(f"  (liveness refused attempt {tries}: {result.outcome.message}; trying again)",
                  flush=True)  # fmt: skip
        return value, tries

    def session(self, name: str, challenge: bytes) -> Any:
        performer = self.ev.Performer(
            self.cache, self.people[name], self.rng, self.horizon(challenge)
        )
        self._performer = performer

        class Session:  # the camera: the person answers each prompt as it appears
            def frames(self) -> Any:
                return iter(performer)

            def close(self) -> None:
                pass

        return Session()


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")


def _photos(folder: Path) -> list[Any]:
    from devicebio.sources import ImageFolderSource

    return [f.rgb for f in ImageFolderSource(folder).frames()]


class Demo:
    def __init__(self, workdir: Path, faces: Path | None, camera: bool) -> None:
        self.workdir = workdir
        self.faces = faces
        self.camera = camera
        self.steps: list[Step] = []

    def record(self, name: str, expected: str, got: str, why: str) -> None:
        self.steps.append(Step(name, expected, got, why))
        mark = "ok" if expected == got else "DEVIATES"
        print(f"  {name}: {got} ({why}) [{mark}]", flush=True)

    def sources(self) -> tuple[Any, Any, Any]:
        """Enrolment frames of A, other frames of A, frames of B."""
        from devicebio.sources import StaticFrames, open_source

        if self.camera:
            print("camera mode: look at the camera to enrol; the impostor step needs someone else")
            return open_source("camera"), open_source("camera"), open_source("camera")
        assert self.faces is not None
        people = sorted(p for p in self.faces.iterdir() if p.is_dir())
        if (self.faces / PERSON_A).is_dir() and (self.faces / PERSON_B).is_dir():
            a, b = self.faces / PERSON_A, self.faces / PERSON_B
        elif len(people) >= 2:
            a, b = people[0], people[1]
        else:
            raise SystemExit(f"{self.faces} needs a folder per person, two people at least")
        photos_a, photos_b = _photos(a), _photos(b)
        if len(photos_a) < 6:
            raise SystemExit(f"{a} needs 6 photos (3 to enrol, 3 to authenticate)")
        return (
            StaticFrames(photos_a[:3]),
            StaticFrames(photos_a[3:6]),
            StaticFrames(photos_b[:3]),
        )

    def main(self) -> int:
        from devicebio import Authenticator, Consent, PassphraseKey, Pin, RecoveryCodes, Vault

        enrol, genuine, impostor = self.sources()
        rp = RelyingParty(self.workdir)
        print(f"relying party: {rp.url} (reference service, SQLite, loopback)")
        try:
            vault = Vault.create(self.workdir / "vault", PassphraseKey("demo: use a prompt"))
            Pin(vault).set(PIN)
            RecoveryCodes(vault).new()
            print(
                "device: vault created (Argon2id + XChaCha20-Poly1305), PIN and recovery codes set"
            )
            print("device: loading face models (pinned; built once by devicebio models build)")
            auth = Authenticator(vault)
            auth.pipeline  # noqa: B018 (load the models before the timed steps)

            # 1. Register the device credential (the user proves the PIN).
            ch = rp.challenge("alice", "register")
            reg = auth.register_with_pin(
                PIN, user_name="alice", rp_id=RP_ID, origin=ORIGIN, challenge=ch
            )
            res = rp.post("/register", {"user": "alice", "challenge": _b64(ch),
                                        "credential": reg.to_json()}, admin=True)  # fmt: skip
            self.record("register the device", "accepted", _verdict(res), _rp_why(res))

            # 2. Enrol person A's face.
            result = auth.enroll("alice", enrol, consent=Consent("sign in to the bank", 30))
            self.record(
                "enrol A's face", "enrolled", "enrolled" if result.ok else "refused",
                f"{result.templates} protected templates from {result.frames_seen} frames"
                if result.ok else result.outcome.message if result.outcome else "",
            )  # fmt: skip

            # 3. A authenticates with other photos.
            res = self.face_round(auth, rp, genuine)
            self.record("A authenticates by face", "accepted", _verdict(res), _rp_why(res))

            # 4-8. B presents five times: refused on the device, then locked out.
            for attempt in range(1, 6):
                res = self.face_round(auth, rp, impostor)
                self.record(f"B presents (attempt {attempt})", "refused", _verdict(res),
                            res.get("why", _rp_why(res)))  # fmt: skip
            res = self.face_round(auth, rp, genuine)
            self.record("A again, during lockout", "locked_out", res.get("device", "?"),
                        res.get("why", ""))  # fmt: skip

            # 9. PIN fallback: accepted, and the RP's policy marks it weaker.
            ch = rp.challenge("alice", "authenticate")
            assertion = auth.authenticate_with_pin(PIN, rp_id=RP_ID, origin=ORIGIN, challenge=ch)
            res = rp.post("/verify", {"challenge": _b64(ch), "credential": assertion.to_json()})
            got = _verdict(res)
            if (
                got == "accepted"
                and res.get("method") == "pin"
                and res.get("assurance") != "weaker"
            ):
                got = "accepted, but not marked weaker"
            self.record("PIN fallback", "accepted", got, _rp_why(res))

            # 10. The RP revokes the credential (lost device) and publishes the list.
            revoke = {
                "credential_id": reg.to_json()["id"],
                "reason": "user_key_physical_compromise",
            }
            res = rp.post("/revoke", revoke, admin=True)
            listed = res.get("list") or {}
            self.record("RP revokes the credential", "accepted", _verdict(res),
                        f"signed list serial {listed.get('serial')}, "
                        f"{len(listed.get('entries', []))} entry")  # fmt: skip

            # 11. A's next (valid) face assertion is refused by the RP.
            res = self.face_round(auth, rp, genuine)
            self.record("A after revocation", "refused", _verdict(res), _rp_why(res))

            # 12-13. A second device with liveness: the RP requires it for this user.
            self.liveness_steps(rp)
        finally:
            rp.close()
        return self.report()

    def liveness_steps(self, rp: RelyingParty) -> None:
        """Person T (real video) enrols, answers the RP's liveness prompts, and is accepted as
        strong; then a still photo of T's own face is refused on the device."""
        import numpy as np

        from devicebio import (
            ActiveLiveness,
            Authenticator,
            Consent,
            FacePipeline,
            PassphraseKey,
            Pin,
            StaticFrames,
            Vault,
        )

        videos = video_dir()
        if self.camera or not videos.is_dir():
            print(f"(liveness steps skipped: no face videos at {videos}; set DEVICEBIO_VIDEO)")
            return
        camera = LiveCamera(videos)
        neutral = camera.neutral("tvl")

        vault = Vault.create(self.workdir / "vault-t", PassphraseKey("demo: use a prompt"))
        Pin(vault).set(PIN)
        pipeline = FacePipeline()

        class Reporting(ActiveLiveness):
            """The product's liveness check (default PAD included), keeping its last result
            so the demo can say which check refused (the Authenticator's outcome says only
            "liveness failed", on purpose: an attacker learns nothing from it)."""

            last: Any = None

            def run(self, *args: Any, **kwargs: Any) -> Any:
                self.last = super().run(*args, **kwargs)
                return self.last

        live = Reporting(pipeline)
        auth = Authenticator(vault, pipeline=pipeline, liveness=live, on_prompt=camera.on_prompt)
        ch = rp.challenge("t", "register")
        reg = auth.register_with_pin(PIN, user_name="t", rp_id=RP_ID, origin=ORIGIN, challenge=ch)
        rp.post("/register", {"user": "t", "challenge": _b64(ch), "credential": reg.to_json()},
                admin=True)  # fmt: skip
        enrolled = auth.enroll(
            "t",
            StaticFrames(neutral[:: max(1, len(neutral) // 3)][:3]),
            consent=Consent("demo", 30),
        )
        verdict = "enrolled" if enrolled.ok else "refused"
        self.record("enrol T's face (from video)", "enrolled", verdict,
                    f"{enrolled.templates} templates")  # fmt: skip

        from devicebio.protocol import liveness_plan

        def attempt() -> tuple[bytes, Any]:
            ch = rp.challenge("t", "authenticate")
            session = camera.session("tvl", ch)
            return ch, auth.authenticate("t", session, rp_id=RP_ID, origin=ORIGIN, challenge=ch)

        (ch, result), tries = camera.until_live(attempt, lambda v: v[1])
        prompts = ", ".join(step.prompt.value for step in liveness_plan(ch))
        if result.assertion is None:
            res = {"ok": False, "why": f"device: {result.outcome.message}"}
        else:
            res = rp.post("/verify", {"challenge": _b64(ch), "require_liveness": True,
                                      "credential": result.assertion.to_json()})  # fmt: skip
        self.record("T with liveness (RP requires it)", "accepted", _verdict(res),
                    f"attempts {tries}; prompts {prompts}; "
                    + res.get("why", _rp_why(res)))  # fmt: skip

        # A printed photo of T held in front of the camera: a still frame, sensor noise only.
        photo = neutral[0].astype(np.int16)
        stills = [
            np.clip(photo + camera.rng.integers(-2, 3, photo.shape), 0, 255).astype(np.uint8)
            for _ in range(int(30 * camera.horizon(ch)))
        ]
        ch = rp.challenge("t", "authenticate")
        attack = StaticFrames(stills, fps=30)
        result = auth.authenticate("t", attack, rp_id=RP_ID, origin=ORIGIN, challenge=ch)
        got = "refused" if result.assertion is None else "accepted"
        self.record("photo of T held up", "refused", got,
                    f"device: {result.outcome.message}; nothing sent")  # fmt: skip

        # T's own recorded clips on a phone screen held up to the camera, steered to answer
        # each prompt as it appears (simulated recapture: devicebio.evaluation.liveness.screen).
        # The prompts are answered; the passive PAD reads the screen in the image.
        from devicebio.evaluation.liveness.screen import ScreenRecapture
        from devicebio.sources import Frame

        screen = ScreenRecapture(np.random.default_rng(0))
        ch = rp.challenge("t", "authenticate")
        clips = camera.session("tvl", ch)  # T's recorded clips, played as each prompt appears

        class OnScreen:
            def frames(self) -> Any:
                return (Frame(screen.render(f.rgb, f.timestamp), f.timestamp)
                        for f in clips.frames())  # fmt: skip

            def close(self) -> None:
                pass

        result = auth.authenticate("t", OnScreen(), rp_id=RP_ID, origin=ORIGIN, challenge=ch)
        got = "refused" if result.assertion is None else "accepted"
        checks = [f"{v.name} {'passed' if v.passed else 'refused'}" for v in live.last.pad]
        self.record("T's video on a phone, steered", "refused", got,
                    f"device: {result.outcome.message}; check: {live.last.reason}; prompts "
                    f"answered {live.last.steps_done}/{len(live.last.plan)}; PAD: "
                    f"{', '.join(checks) or 'none ran'}; nothing sent")  # fmt: skip

    def face_round(self, auth: Any, rp: RelyingParty, frames: Any) -> dict[str, Any]:
        ch = rp.challenge("alice", "authenticate")
        result = auth.authenticate("alice", frames, rp_id=RP_ID, origin=ORIGIN, challenge=ch)
        if result.assertion is None:
            return {
                "ok": False,
                "device": result.outcome.code.value,
                "why": f"device: {result.outcome.message}; nothing sent"
                + (f"; offers {', '.join(result.fallbacks)}" if result.fallbacks else ""),
            }
        return rp.post("/verify", {"challenge": _b64(ch), "credential": result.assertion.to_json()})

    def report(self) -> int:
        width = max(len(s.name) for s in self.steps)
        print(f"\n{'step':<{width}}  {'expected':<10} {'decided':<10} why")
        print("-" * (width + 80))
        for s in self.steps:
            mark = "" if s.ok else "   <-- DEVIATES"
            print(f"{s.name:<{width}}  {s.expected:<10} {s.got:<10} {s.why}{mark}")
        bad = [s for s in self.steps if not s.ok]
        print(f"\n{len(self.steps) - len(bad)}/{len(self.steps)} steps as expected")
        return 1 if bad else 0


def _b64(data: bytes) -> str:
    from devicebio.protocol import b64url_encode

    return b64url_encode(data)


def _verdict(res: dict[str, Any]) -> str:
    return "accepted" if res.get("ok") else "refused"


def _rp_why(res: dict[str, Any]) -> str:
    if "decision" in res:
        return f"RP: {res['decision']}"
    if not res.get("ok"):
        return f"RP: refused, reason {res.get('reason')}"
    return "RP: " + ", ".join(f"{k} {res[k]}" for k in ("method", "assurance") if k in res)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--faces", help="folder with one sub-folder of photos per person")
    parser.add_argument("--camera", action="store_true", help="use the camera instead of photos")
    parser.add_argument("--workdir", help="keep the RP database and the vault here")
    args = parser.parse_args()
    faces = None
    if not args.camera:
        lfw = Path(os.environ.get("DEVICEBIO_LFW", REPO.parent / "shared" / "data" / "lfw"))
        faces = Path(args.faces) if args.faces else lfw / "images"
        if not faces.is_dir():
            print(
                f"no face photos at {faces}.\n"
                "Point the demo at photos or a camera instead:\n"
                "  tox -e demo -- --faces DIR   (DIR/<person>/*.jpg: 2 people, 6+ photos of one)\n"
                "  tox -e demo -- --camera       (enrol and authenticate yourself)\n"
                "  or set DEVICEBIO_LFW to a folder holding LFW's images/ and pairs.txt",
                file=sys.stderr,
            )
            return 2
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="devicebio-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"devicebio demo (working in {workdir})")
    try:
        return Demo(workdir, faces, args.camera).main()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
