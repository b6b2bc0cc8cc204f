"""Authenticator.authorize_payment on real faces: the transaction is shown before any frame is
read, a decline signs nothing, a match signs payment.get with exactly the payment shown, an
impostor gets nothing signed, and the PIN fallback pays a small amount (verified end to end)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy", reason="the device tests need the [device] extra (numpy)")
cv2 = pytest.importorskip("cv2", reason="face authentication needs the [device] extra")

from helpers.challenges import fixed_challenge  # noqa: E402

from devicebio.authenticator import Authenticator, Consent  # noqa: E402
from devicebio.errors import DeviceBioError, Reason  # noqa: E402
from devicebio.fallback import Pin  # noqa: E402
from devicebio.outcome import OutcomeCode  # noqa: E402
from devicebio.protocol import Amount, Instrument, PaymentDetails, b64url_decode  # noqa: E402
from devicebio.sources import StaticFrames  # noqa: E402
from devicebio.store.vault import RawKey, Vault  # noqa: E402
from verifier import (  # noqa: E402
    PaymentPolicy,
    Purpose,
    SQLiteStore,
    VerifierError,
    verify_payment,
    verify_registration,
)
from verifier.errors import Reason as RPReason  # noqa: E402

RP, ORIGIN = "canteen.example", "https://canteen.example"
PIN = "480213"
A, B = "Colin_Powell", "Tony_Blair"
LUNCH = PaymentDetails(
    rp_id=RP,
    top_origin=ORIGIN,
    payee_name="School canteen",
    total=Amount("EUR", "2.50"),
    instrument=Instrument("Student card 0042", "https://canteen.example/card.png"),
)


def _faces(lfw_dir: Path, name: str, *numbers: int) -> list[Any]:
    out = []
    for n in numbers:
        bgr = cv2.imread(str(lfw_dir / "images" / name / f"{name}_{n:04d}.jpg"))
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


class Recording(StaticFrames):
    """Frames that note in ``events`` when the camera was first read."""

    def __init__(self, frames: list[Any], events: list[str]) -> None:
        super().__init__(frames)
        self.events = events

    def frames(self) -> Any:
        self.events.append("capture")
        return super().frames()


@pytest.fixture()
def device(tmp_path: Path, pipeline, lfw_dir: Path):
    vault = Vault.create(tmp_path / "vault", RawKey(b"\x07" * 32))
    auth = Authenticator(vault, pipeline=pipeline)
    assert auth.enroll(
        "colin", StaticFrames(_faces(lfw_dir, A, 1, 2, 3)), consent=Consent("canteen", 30)
    ).ok
    Pin(vault).set(PIN)
    store = SQLiteStore(tmp_path / "rp.sqlite")
    ch = fixed_challenge(store, "test_payment/3", user="colin", purpose=Purpose.REGISTER)
    reg = auth.register_with_pin(PIN, user_name="colin", rp_id=RP, origin=ORIGIN, challenge=ch)
    verify_registration(
        credential=reg.to_json(),
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        user="colin",
    )
    return auth, store


def test_the_transaction_is_shown_before_capture_and_signed_as_shown(device, lfw_dir) -> None:
    auth, store = device
    events: list[str] = []

    def show(payment: PaymentDetails) -> bool:
        events.append(f"shown {payment.total}")
        return True

    ch = fixed_challenge(store, "test_payment/1", user="colin", purpose=Purpose.PAYMENT)
    frames = Recording(_faces(lfw_dir, A, 4, 5, 6), events)
    result = auth.authorize_payment(
        "colin", frames, rp_id=RP, origin=ORIGIN, challenge=ch, payment=LUNCH, on_transaction=show
    )
    assert events == ["shown 2.50 EUR", "capture"]
    assert result.ok and result.outcome.code is OutcomeCode.MATCHED
    client = json.loads(result.assertion.client_data_json)
    assert client["type"] == "payment.get" and client["payment"] == LUNCH.to_json()
    # A face without liveness never pays at this verifier (the device has no liveness here).
    with pytest.raises(VerifierError) as info:
        verify_payment(
            credential=result.assertion.to_json(),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            expected_payment=LUNCH,
            store=store,
        )
    assert info.value.reason is RPReason.POLICY_LIVENESS_REQUIRED


def test_a_declined_transaction_reads_no_frame_and_signs_nothing(device, lfw_dir) -> None:
    auth, _ = device
    events: list[str] = []
    for answer in (False, None, "yes"):
        with pytest.raises(DeviceBioError) as info:
            auth.authorize_payment(
                "colin",
                Recording(_faces(lfw_dir, A, 4), events),
                rp_id=RP,
                origin=ORIGIN,
                challenge=b"c" * 32,
                payment=LUNCH,
                on_transaction=lambda _p, a=answer: a,
            )
        assert info.value.reason is Reason.USER_DECLINED
    assert events == []
    assert auth.credentials()[0].sign_count == 0  # nothing signed: the counter never moved


def test_a_payment_for_another_rp_is_refused_before_it_is_shown(device, lfw_dir) -> None:
    auth, _ = device
    shown: list[Any] = []
    with pytest.raises(DeviceBioError) as info:
        auth.authorize_payment(
            "colin",
            StaticFrames(_faces(lfw_dir, A, 4)),
            rp_id="other.example",
            origin="https://other.example",
            challenge=b"c" * 32,
            payment=LUNCH,
            on_transaction=lambda p: shown.append(p) or True,
        )
    assert info.value.reason is Reason.INVALID_ARGUMENT and shown == []


def test_an_impostor_gets_nothing_signed(device, lfw_dir) -> None:
    auth, _ = device
    result = auth.authorize_payment(
        "colin",
        StaticFrames(_faces(lfw_dir, B, 1, 2, 3)),
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"c" * 32,
        payment=LUNCH,
        on_transaction=lambda _p: True,
    )
    assert result.assertion is None and result.outcome.code is OutcomeCode.NO_MATCH


def test_pin_pays_a_small_amount_end_to_end(device) -> None:
    auth, store = device
    ch = fixed_challenge(store, "test_payment/2", user="colin", purpose=Purpose.PAYMENT)
    assertion = auth.authorize_payment_with_pin(
        PIN, rp_id=RP, origin=ORIGIN, challenge=ch, payment=LUNCH, on_transaction=lambda _p: True
    )
    ok = verify_payment(
        credential=assertion.to_json(),
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        expected_payment=LUNCH,
        store=store,
        payment_policy=PaymentPolicy(),
    )
    assert ok.assertion.method.value == "pin" and ok.assertion.assurance.value == "weaker"
    assert (
        json.loads(b64url_decode(assertion.to_json()["response"]["clientDataJSON"]))["payment"]
        == LUNCH.to_json()
    )
    with pytest.raises(DeviceBioError) as info:
        auth.authorize_payment_with_pin(
            "000000", rp_id=RP, origin=ORIGIN, challenge=ch, payment=LUNCH,
            on_transaction=lambda _p: True,
        )  # fmt: skip
    assert info.value.reason is Reason.PIN_WRONG
