"""verifier.views: the one copy of what the CLI (--json) and the HTTP service show."""

from __future__ import annotations

import pytest

from devicebio.protocol import LivenessClaim, Method
from verifier.assertion import VerifiedAssertion
from verifier.errors import Reason, VerifierError
from verifier.policy import Assurance, Policy
from verifier.views import assertion_json, b64url_text, refused_decision, utc


def test_b64url_text_tolerates_padding_only() -> None:
    assert b64url_text("Y3JlZC0x", "id") == b"cred-1"
    assert b64url_text("Y3JlZA==", "id") == b"cred"
    for bad in ("", "=", "***", "Y3JlZC0x!", "A", "Y3JlZC0x" * 300, " Y3JlZA", None, 7):
        with pytest.raises(VerifierError) as e:
            b64url_text(bad, "id")
        assert e.value.reason is Reason.MALFORMED and "id must be base64url" in str(e.value)
    # One value, one spelling: non-canonical trailing bits are refused, padded or not.
    for other_spelling in ("Y3JlZB", "Y3JlZB=="):  # the same bytes as "Y3JlZA", other bits
        with pytest.raises(VerifierError):
            b64url_text(other_spelling, "id")


def test_utc() -> None:
    assert utc(1_764_633_600) == "2025-12-02T00:00:00Z"
    assert utc(1_764_633_600.9) == "2025-12-02T00:00:00Z"  # to the second, never rounded up
    assert utc(2**63 - 1) is None


def test_decisions_and_assertion_view() -> None:
    result = VerifiedAssertion(
        credential_id=b"\x01\x02",
        user="alice",
        new_sign_count=3,
        method=Method.PIN,
        assurance=Assurance.WEAKER,
        liveness=LivenessClaim.none(),
        model=None,
        user_verified=True,
    )
    view = assertion_json(result, Policy(), revocation_checked=False)
    assert view["credential_id"] == "AQI" and view["sign_count"] == 3
    assert view["step_up_required"] is True and view["re_enrol_required"] is False
    assert view["decision"].startswith("accepted with reduced assurance: PIN only = weaker")
    assert view["policy"]["assurance"]["pin"] == "weaker"
    assert refused_decision("revoked", "x").startswith("refused: revoked (the credential")
    assert refused_decision("not_a_reason", "why") == "refused: not_a_reason (why)"
