"""devicebio's relying-party side: verify registrations and assertions from devicebio
devices, with challenges, counters, policy and revocation. Fails closed: every refusal is a
:class:`VerifierError` whose ``reason`` is a :class:`Reason`.

Typical use::

    store = SQLiteStore("verifier.db")
    ch = issue_challenge(store, user="alice", purpose=Purpose.REGISTER)
    reg = verify_registration(credential=json_from_device, expected_challenge=ch.value,
                              expected_origin="https://example.com",
                              expected_rp_id="example.com", store=store, user="alice")
    ch = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE)
    ok = verify_assertion(credential=json_from_device, expected_challenge=ch.value,
                          expected_origin="https://example.com", expected_rp_id="example.com",
                          store=store, policy=Policy(require_liveness=True),
                          revocation_issuer_key=issuer_verify_key)
    ok.assurance  # what this RP's policy grants: strong / moderate / weaker / recovery
    # a payment (Secure Payment Confirmation payment.get), on a Purpose.PAYMENT challenge:
    paid = verify_payment(credential=..., expected_challenge=..., expected_origin=...,
                          expected_rp_id=..., expected_payment=payment_details, store=store,
                          payment_policy=PaymentPolicy())  # paid.record: what was recorded

Importing this package never imports numpy, OpenCV or onnxruntime.
"""

from __future__ import annotations

from .assertion import VerifiedAssertion, verify_assertion
from .challenges import Challenge, Purpose, issue_challenge
from .errors import Reason, VerifierError
from .payment import PaymentPolicy, VerifiedPayment, verify_payment
from .policy import Assurance, Method, Policy
from .registration import VerifiedRegistration, verify_registration
from .revocation import (
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    install_revocation_list,
    parse_revocation_list,
    sign_revocation_list,
)
from .store import CredentialRecord, SQLiteStore, Store

__all__ = [
    "Assurance",
    "Challenge",
    "CredentialRecord",
    "EntryKind",
    "Method",
    "PaymentPolicy",
    "Policy",
    "Purpose",
    "Reason",
    "RevocationEntry",
    "RevocationList",
    "RevocationReason",
    "SQLiteStore",
    "Store",
    "VerifiedAssertion",
    "VerifiedPayment",
    "VerifiedRegistration",
    "VerifierError",
    "install_revocation_list",
    "issue_challenge",
    "parse_revocation_list",
    "sign_revocation_list",
    "verify_assertion",
    "verify_payment",
    "verify_registration",
]
