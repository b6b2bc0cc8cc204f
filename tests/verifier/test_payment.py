"""verify_payment: a Secure Payment Confirmation assertion from the real device credentials,
accepted once, and each refusal with its reason (changed amount, currency, payee, instrument,
topOrigin; the wrong clientData type either way; replay; per-method and daily limits)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from helpers.challenges import fixed_challenge

from devicebio.hazmat.credentials import Credentials, UserVerification
from devicebio.protocol import (
    Amount,
    Instrument,
    LivenessClaim,
    Method,
    PaymentDetails,
    b64url_decode,
    b64url_encode,
    liveness_plan,
    liveness_sequence_hash,
)
from devicebio.store.vault import RawKey, Vault
from verifier import (
    PaymentPolicy,
    Purpose,
    Reason,
    SQLiteStore,
    VerifierError,
    verify_assertion,
    verify_payment,
    verify_registration,
)
from verifier.views import receipt_json

RP = "canteen.example"
ORIGIN = "https://canteen.example"
MODEL = "dlib-resnet-v1@6a1b2c3d"
NOW = 1_800_000_000.0
PIN = UserVerification(Method.PIN, LivenessClaim.none(), None, True)
KEY = UserVerification(Method.SECURITY_KEY, LivenessClaim.none(), None, True)
FACE_NO_LIVENESS = UserVerification(Method.FACE, LivenessClaim.none(), MODEL, True)


def face(challenge: bytes) -> UserVerification:
    """A face verification whose liveness claim is bound to ``challenge``'s prompts."""
    bound = liveness_sequence_hash(challenge, liveness_plan(challenge))
    return UserVerification(
        Method.FACE, LivenessClaim("active-challenge", True, bound, 300), MODEL, True
    )


def lunch(value: str = "2.50", **changes: Any) -> PaymentDetails:
    base = PaymentDetails(
        rp_id=RP,
        top_origin=ORIGIN,
        payee_name="School canteen",
        payee_origin=ORIGIN,
        total=Amount("EUR", value),
        instrument=Instrument("Student card 0042", "https://canteen.example/card.png"),
    )
    return dataclasses.replace(base, **changes)


class Till:
    """A registered student device and the canteen's verifier, all real parts."""

    def __init__(self, path: Path) -> None:
        self.creds = Credentials(Vault.create(path, RawKey(b"\x35" * 32)))
        self.store = SQLiteStore()
        ch = fixed_challenge(self.store, "register", user="alice", purpose=Purpose.REGISTER)
        reg = self.creds.register(
            rp_id=RP, origin=ORIGIN, challenge=ch, user_name="alice", verification=PIN
        )
        verify_registration(
            credential=reg.to_json(),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=self.store,
            user="alice",
            now=NOW,
        )
        self.ids = iter(range(1, 1000))
        self.labels = iter(range(1, 1000))

    def challenge(self, purpose: Purpose = Purpose.PAYMENT) -> bytes:
        label = f"{purpose.value}-{next(self.labels)}"
        return fixed_challenge(self.store, label, user="alice", purpose=purpose)

    def sign(
        self, ch: bytes, payment: PaymentDetails | None, uv: UserVerification | None = None
    ) -> dict[str, Any]:
        assertion = self.creds.authenticate(
            rp_id=RP, origin=ORIGIN, challenge=ch, verification=uv or face(ch), payment=payment
        )
        return assertion.to_json()

    def verify(self, credential: Any, ch: bytes, expected: PaymentDetails, **kw: Any) -> Any:
        kw.setdefault("now", NOW)
        return verify_payment(
            credential=credential,
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            expected_payment=expected,
            store=self.store,
            payment_id=f"p{next(self.ids)}",
            **kw,
        )

    def refused(self, reason: Reason, *args: Any, **kw: Any) -> VerifierError:
        with pytest.raises(VerifierError) as info:
            self.verify(*args, **kw)
        assert info.value.reason is reason, info.value
        return info.value


@pytest.fixture
def till(tmp_path: Path) -> Till:
    return Till(tmp_path / "vault")


def test_face_with_liveness_pays_and_is_recorded(till: Till) -> None:
    ch = till.challenge()
    ok = till.verify(till.sign(ch, lunch()), ch, lunch())
    assert ok.payment == lunch()
    assert ok.assertion.method is Method.FACE and ok.assertion.liveness.passed
    assert ok.daily_total == "2.50"
    receipt = receipt_json(ok.record)
    assert receipt["amount"] == "2.50" and receipt["currency"] == "EUR"
    assert receipt["audit_id"] == ok.payment_id and receipt["method"] == "face"
    assert (
        receipt["payee"] == "School canteen" and receipt["assurance"] == "moderate"
    )  # issue 13 default
    stored = till.store.get_payment(ok.payment_id)
    assert stored == ok.record and stored.amount_micros == 2_500_000
    assert json.loads(stored.payment) == lunch().to_json()
    events = [e for e in till.store.audit_events() if e[1] == "payment_authorised"]
    assert events[-1][2]["payment_id"] == ok.payment_id


def test_the_signed_client_data_is_payment_get_with_the_member_shown(till: Till) -> None:
    ch = till.challenge()
    cred = till.sign(ch, lunch())
    client = json.loads(b64url_decode(cred["response"]["clientDataJSON"]))
    assert client["type"] == "payment.get"
    assert client["payment"] == lunch().to_json()
    assert client["payment"]["total"] == {"currency": "EUR", "value": "2.50"}


@pytest.mark.parametrize(
    "changed",
    [
        {"total": Amount("EUR", "25.00")},
        {"total": Amount("USD", "2.50")},
        {"total": Amount("EUR", "2.5")},  # the same number, another spelling: not what was shown
        {"payee_name": "Tuck shop"},
        {"payee_origin": "https://tuckshop.example"},
        {"instrument": Instrument("Parent's card", "https://canteen.example/card.png")},
        {"instrument": Instrument("Student card 0042", "https://canteen.example/other.png")},
        {"top_origin": "https://evil.example"},
    ],
    ids=["amount", "currency", "amount-spelling", "payee", "payee-origin", "instrument",
         "icon", "top-origin"],
)  # fmt: skip
def test_a_changed_payment_is_refused_as_a_mismatch(till: Till, changed: dict[str, Any]) -> None:
    ch = till.challenge()
    signed = till.sign(ch, lunch())
    policy = PaymentPolicy(currency=changed["total"].currency) if "total" in changed else None
    kw = {"payment_policy": policy} if policy else {}
    till.refused(Reason.PAYMENT_MISMATCH, signed, ch, lunch(**changed), **kw)
    # the attempt burned the challenge: the genuine request cannot be settled with it later
    till.refused(Reason.CHALLENGE_REUSED, signed, ch, lunch())


def test_a_tampered_amount_in_the_signed_bytes_breaks_the_signature(till: Till) -> None:
    ch = till.challenge()
    cred = till.sign(ch, lunch())
    raw = b64url_decode(cred["response"]["clientDataJSON"])
    cred["response"]["clientDataJSON"] = b64url_encode(raw.replace(b'"2.50"', b'"25.0"'))
    till.refused(Reason.BAD_SIGNATURE, cred, ch, lunch("25.0"))


def test_the_same_assertion_for_another_request_is_a_mismatch_then_a_replay(till: Till) -> None:
    ch = till.challenge()
    cred = till.sign(ch, lunch())
    till.verify(cred, ch, lunch())
    other = till.challenge()
    till.refused(Reason.PAYMENT_MISMATCH, cred, other, lunch("25.00"))
    till.refused(Reason.CHALLENGE_REUSED, cred, ch, lunch())


def test_a_sign_in_assertion_presented_as_a_payment_is_the_wrong_type(till: Till) -> None:
    ch = till.challenge()
    till.refused(Reason.WRONG_TYPE, till.sign(ch, None), ch, lunch())


def test_a_payment_presented_as_a_sign_in_is_the_wrong_type(till: Till) -> None:
    ch = till.challenge(Purpose.AUTHENTICATE)
    with pytest.raises(VerifierError) as info:
        verify_assertion(
            credential=till.sign(ch, lunch()),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=till.store,
            now=NOW,
        )
    assert info.value.reason is Reason.WRONG_TYPE


def test_a_sign_in_challenge_cannot_settle_a_payment(till: Till) -> None:
    ch = till.challenge(Purpose.AUTHENTICATE)
    till.refused(Reason.CHALLENGE_WRONG_PURPOSE, till.sign(ch, lunch()), ch, lunch())


def test_a_payment_member_under_webauthn_get_is_still_the_wrong_type(till: Till) -> None:
    ch = till.challenge()
    cred = till.sign(ch, None)
    client = json.loads(b64url_decode(cred["response"]["clientDataJSON"]))
    client["payment"] = lunch().to_json()
    cred["response"]["clientDataJSON"] = b64url_encode(json.dumps(client).encode())
    # the type is wrong first: a sign-in is never a payment, with or without the member
    till.refused(Reason.WRONG_TYPE, cred, ch, lunch())


def test_face_above_its_limit_demands_a_step_up(till: Till) -> None:
    ch = till.challenge()
    err = till.refused(Reason.AMOUNT_ABOVE_METHOD_LIMIT, till.sign(ch, lunch("25.00")), ch,
                       lunch("25.00"))  # fmt: skip
    assert "security-key" in str(err)
    assert till.store.payment_total("alice", "EUR", 0) == 0  # nothing recorded
    refused = [e for e in till.store.audit_events() if e[1] == "payment_refused"][-1][2]
    assert refused["reason"] == "amount_above_method_limit" and refused["payment_id"]
    ch = till.challenge()
    ok = till.verify(till.sign(ch, lunch("25.00"), KEY), ch, lunch("25.00"))
    assert ok.assertion.method is Method.SECURITY_KEY


def test_pin_pays_small_amounts_only_and_is_weaker(till: Till) -> None:
    ch = till.challenge()
    ok = till.verify(till.sign(ch, lunch("2.50"), PIN), ch, lunch("2.50"))
    assert ok.assertion.assurance.value == "weaker"
    ch = till.challenge()
    till.refused(Reason.AMOUNT_ABOVE_METHOD_LIMIT, till.sign(ch, lunch("5.01"), PIN), ch,
                 lunch("5.01"))  # fmt: skip


def test_face_without_liveness_never_pays(till: Till) -> None:
    ch = till.challenge()
    signed = till.sign(ch, lunch("1.00"), FACE_NO_LIVENESS)
    till.refused(Reason.POLICY_LIVENESS_REQUIRED, signed, ch, lunch("1.00"))


def test_the_daily_total_forces_a_step_up(till: Till) -> None:
    for _ in range(3):  # 3 x 9.50 = 28.50 of the 30.00 a day
        ch = till.challenge()
        till.verify(till.sign(ch, lunch("9.50")), ch, lunch("9.50"))
    ch = till.challenge()
    err = till.refused(Reason.DAILY_LIMIT, till.sign(ch, lunch("2.00")), ch, lunch("2.00"))
    assert "security-key" in str(err)
    ch = till.challenge()
    ok = till.verify(till.sign(ch, lunch("2.00"), KEY), ch, lunch("2.00"))
    assert ok.daily_total == "30.50"
    # a day later the window has moved on
    ch = till.challenge()
    till.verify(till.sign(ch, lunch("2.00")), ch, lunch("2.00"), now=NOW + 86_401)


def test_a_policy_without_this_currency_is_a_caller_error(till: Till) -> None:
    ch = till.challenge()
    till.refused(Reason.MALFORMED, till.sign(ch, lunch()), ch, lunch(total=Amount("JPY", "300")))


def test_policy_values_are_checked() -> None:
    with pytest.raises(VerifierError):
        PaymentPolicy(pin="5,00")
    with pytest.raises(VerifierError):
        PaymentPolicy(currency="eur")
    assert PaymentPolicy().methods_for(25_000_000) == ["security-key"]
    assert PaymentPolicy().methods_for(2_000_000) == ["face", "pin", "security-key"]
