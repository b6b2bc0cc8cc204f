"""Pay by face at a school-canteen till, with no face database anywhere.

The canteen's till is the reference service (``verifier serve``, its merchant routes
``/pay/request``, ``/pay/verify``, ``/pay/receipt``) in its own process, on loopback. The
student's device is this process: a sealed vault, a PIN, real face models, and recorded face
video answering the liveness prompts. The device shows each transaction before it captures
anything and signs it in the W3C Secure Payment Confirmation shape (``payment.get``); the
till checks that what was signed is what it asked for, under its payment policy (face with
liveness up to 20.00 EUR, PIN up to 5.00, 30.00 a day without step-up).

Every step has an expected result; the exit code is non-zero if any step deviates.

    python examples/canteen.py        # videos from ../shared/data/video (or DEVICEBIO_VIDEO)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import PIN, Demo, LiveCamera, RelyingParty, _b64, _verdict, video_dir

RP_ID, ORIGIN = "canteen.example", "https://canteen.example"
STUDENT, IMPOSTOR = "tvl", "krz"  # two people of the recorded videos
CARD = {"instrument_name": "Student card 0042", "instrument_icon": f"{ORIGIN}/card.png"}


class Canteen(Demo):
    """The walk-through; ``record`` and ``report`` are the sign-in demo's."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, faces=None, camera=False)
        self.receipts: list[dict[str, Any]] = []

    def request(self, rp: RelyingParty, amount: str) -> dict[str, Any]:
        body = {"user": "student", "payee_name": "School canteen", "payee_origin": ORIGIN,
                "amount": amount, "currency": "EUR", **CARD}  # fmt: skip
        answer = rp.post("/pay/request", body, admin=True)
        if not answer.get("ok"):
            raise SystemExit(f"the till refused to create a payment request: {answer}")
        return answer

    def settle(self, rp: RelyingParty, request: dict[str, Any], credential: Any) -> dict[str, Any]:
        body = {"request_id": request["request_id"], "credential": credential}
        answer = rp.post("/pay/verify", body)
        if answer.get("ok"):
            self.receipts.append(answer["receipt"])
        return answer

    def main(self) -> int:
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
        from devicebio.protocol import PaymentDetails, b64url_decode

        videos = video_dir()
        if not videos.is_dir():
            print(f"no face videos at {videos}; set DEVICEBIO_VIDEO", file=sys.stderr)
            return 2
        camera = LiveCamera(videos)
        rp = RelyingParty(self.workdir, RP_ID, ORIGIN)
        print(f"canteen till: {rp.url} (reference service, SQLite, loopback)")
        try:
            vault = Vault.create(self.workdir / "vault", PassphraseKey("demo: use a prompt"))
            Pin(vault).set(PIN)
            pipeline = FacePipeline()
            auth = Authenticator(
                vault,
                pipeline=pipeline,
                liveness=ActiveLiveness(pipeline),
                on_prompt=camera.on_prompt,
            )
            shown: list[str] = []

            def show(payment: PaymentDetails) -> bool:
                # The app's confirmation screen: the student reads it, then looks at the camera.
                shown.append(payment.lines()[0])
                print(f"  device shows: {' | '.join(payment.lines())}", flush=True)
                return True

            # 1. The student's device registers with the canteen (PIN), and enrols the face.
            ch = rp.challenge("student", "register")
            reg = auth.register_with_pin(
                PIN, user_name="student", rp_id=RP_ID, origin=ORIGIN, challenge=ch
            )
            res = rp.post("/register", {"user": "student", "challenge": _b64(ch),
                                        "credential": reg.to_json()}, admin=True)  # fmt: skip
            self.record("register the student's device", "accepted", _verdict(res),
                        "PIN; a credential for this canteen only")  # fmt: skip
            neutral = camera.neutral(STUDENT)
            enrolled = auth.enroll(
                "student",
                StaticFrames(neutral[:: max(1, len(neutral) // 3)][:3]),
                consent=Consent("pay at the school canteen", 365),
            )
            self.record("enrol the student's face (on the device)", "enrolled",
                        "enrolled" if enrolled.ok else "refused",
                        f"{enrolled.templates} protected templates, in the vault only")  # fmt: skip

            asked: list[str] = []  # every amount a payment request was made for, in order

            def pay_by_face(amount: str, person: str = STUDENT) -> tuple[Any, dict[str, Any]]:
                def attempt() -> tuple[Any, dict[str, Any]]:
                    request = self.request(rp, amount)
                    asked.append(f"pay {amount} EUR")
                    challenge = b64url_decode(request["challenge"])
                    result = auth.authorize_payment(
                        "student",
                        camera.session(person, challenge),
                        rp_id=RP_ID,
                        origin=ORIGIN,
                        challenge=challenge,
                        payment=PaymentDetails.from_json(request["payment"]),
                        on_transaction=show,
                    )
                    return result, request

                if person != STUDENT:  # an impostor's refusal is the expected result
                    return attempt()
                value, _ = camera.until_live(attempt, lambda v: v[0])
                return value

            # 2. 2.50 by face with liveness: accepted, strong.
            result, lunch = pay_by_face("2.50")
            if result.assertion is None:
                res = {"ok": False, "why": f"device: {result.outcome.message}"}
            else:
                res = self.settle(rp, lunch, result.assertion.to_json())
            self.record("pay 2.50 by face with liveness", "accepted", _verdict(res), _why(res))

            # 3. The same signed authorisation presented for a 25.00 request: mismatch.
            signed = None if result.assertion is None else result.assertion.to_json()
            dearer = self.request(rp, "25.00")
            res = self.settle(rp, dearer, signed) if signed else {"ok": False}
            got = "mismatch" if res.get("reason") == "payment_mismatch" else _verdict(res)
            self.record("same assertion for 25.00", "mismatch", got, _why(res))

            # 4. The accepted authorisation replayed: refused.
            res = self.settle(rp, lunch, signed) if signed else {"ok": False}
            got = "replay" if res.get("reason") == "challenge_reused" else _verdict(res)
            self.record("replay of the 2.50 payment", "replay", got, _why(res))

            # 5. 25.00 by face: above the face limit, the till demands a step-up.
            result, big = pay_by_face("25.00")
            if result.assertion is None:
                res = {"ok": False, "why": f"device: {result.outcome.message}"}
            else:
                res = self.settle(rp, big, result.assertion.to_json())
            got = "step-up" if res.get("step_up") else _verdict(res)
            self.record("pay 25.00 by face", "step-up", got, _why(res))

            # 6. 1.80 by PIN: accepted, and the policy marks it weaker.
            snack = self.request(rp, "1.80")
            asked.append("pay 1.80 EUR")
            assertion = auth.authorize_payment_with_pin(
                PIN,
                rp_id=RP_ID,
                origin=ORIGIN,
                challenge=b64url_decode(snack["challenge"]),
                payment=PaymentDetails.from_json(snack["payment"]),
                on_transaction=show,
            )
            res = self.settle(rp, snack, assertion.to_json())
            receipt = res.get("receipt", {})
            got = _verdict(res)
            if got == "accepted" and receipt.get("assurance") != "weaker":
                got = "accepted, but not marked weaker"
            self.record("pay 1.80 by PIN", "accepted", got, _why(res))

            # 7. Someone else in front of the student's phone: refused on the device.
            result, _ = pay_by_face("2.50", person=IMPOSTOR)
            got = "refused" if result.assertion is None else "accepted"
            self.record("another person tries to pay", "refused", got,
                        f"device: {result.outcome.message}; nothing signed or sent")  # fmt: skip

            # 8. What the device showed is what was asked, every time, before any capture (a
            # liveness retry is a new request, shown again).
            steps = [a for i, a in enumerate(asked) if i == 0 or a != asked[i - 1]]
            in_order = steps == ["pay 2.50 EUR", "pay 25.00 EUR", "pay 1.80 EUR", "pay 2.50 EUR"]
            as_asked = in_order and [s.split(" to ")[0] for s in shown] == asked
            got = "as asked" if as_asked else "differs"
            self.record("transactions shown before capture", "as asked", got,
                        "; ".join(s.split(" to ")[0] for s in shown))  # fmt: skip

            # 9. Per-merchant credentials: the tuck shop gets another key, id and device id.
            shop = auth.register_with_pin(
                PIN,
                user_name="student",
                rp_id="tuckshop.example",
                origin="https://tuckshop.example",
                challenge=b"tuck-shop-registration-challenge",
            )
            unlinkable = shop.credential_id != reg.credential_id and shop.device_id != reg.device_id
            self.record("a second merchant's credential", "unlinkable",
                        "unlinkable" if unlinkable else "LINKABLE",
                        "another credential id and per-RP device id")  # fmt: skip

            self.print_receipts(rp)
        finally:
            rp.close()
        return self.report()

    def print_receipts(self, rp: RelyingParty) -> None:
        """The till's receipts, read back from its store by audit id."""
        print("\nreceipts (read back from the till by audit id)")
        cols = ("audit_id", "amount", "currency", "payee", "method", "assurance", "sign_count")
        widths = (16, 8, 8, 16, 8, 9, 10)
        print("  ".join(f"{c:<{w}}" for c, w in zip(cols, widths, strict=True)))
        for receipt in self.receipts:
            stored = rp.get(f"/pay/receipt/{receipt['audit_id']}", admin=True).get("receipt")
            if stored != receipt:
                self.record("receipt read back", "identical", "differs", receipt["audit_id"])
            row = [str(receipt[c]) for c in cols]
            row[0] = row[0][:16]
            print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)))
        print()


def _why(res: dict[str, Any]) -> str:
    if "why" in res:
        return str(res["why"])
    if res.get("ok"):
        return f"till: {res.get('decision')}; 24 h total {res.get('daily_total')}"
    return f"till: {res.get('reason')} ({res.get('message')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--workdir", help="keep the till's database and the vault here")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="devicebio-canteen-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"devicebio canteen (working in {workdir})")
    try:
        return Canteen(workdir).main()
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
