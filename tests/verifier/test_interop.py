"""Registrations and assertions made by devicebio verify UNCHANGED with the two WebAuthn
relying-party libraries app developers already use: python-fido2's ``Fido2Server`` and
py_webauthn. Nothing is patched or pre-processed: the device's ``to_json()`` goes in as is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import webauthn
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationConveyancePreference,
    AttestationObject,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)
from helpers.claims import face
from webauthn.helpers.exceptions import InvalidAuthenticationResponse

from devicebio.hazmat.credentials import Credentials, UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store.vault import RawKey, Vault

RP = "example.com"
ORIGIN = "https://example.com"
REQUIRED = UserVerificationRequirement.REQUIRED

VERIFICATIONS = {
    "face+liveness": UserVerification(
        Method.FACE, LivenessClaim("active-challenge", True, b"\x04" * 32, 25), "m@1", True
    ),
    "face": UserVerification(Method.FACE, LivenessClaim.none(), "m@1", True),
    "pin": UserVerification(Method.PIN, LivenessClaim.none(), None, True),
    "security-key": UserVerification(Method.SECURITY_KEY, LivenessClaim.none(), None, True),
    "recovery": UserVerification(Method.RECOVERY, LivenessClaim.none(), None, True),
}


@pytest.fixture
def creds(tmp_path: Path) -> Credentials:
    return Credentials(Vault.create(tmp_path / "vault", RawKey(b"\x66" * 32)))


@pytest.fixture
def server() -> Fido2Server:
    # attestation="direct" makes Fido2Server run its attestation hook; we give it python-
    # fido2's own packed verifier so the self-attestation is checked too.
    from fido2.attestation import PackedAttestation

    def verify_attestation(att: AttestationObject, client_data_hash: bytes) -> None:
        assert att.fmt == "packed"
        PackedAttestation().verify(att.att_stmt, att.auth_data, client_data_hash)

    return Fido2Server(
        PublicKeyCredentialRpEntity(name="Example", id=RP),
        attestation=AttestationConveyancePreference.DIRECT,
        verify_attestation=verify_attestation,
    )


@pytest.mark.parametrize("how", sorted(VERIFICATIONS))
def test_fido2_server_accepts_registration_and_assertions(creds, server, how):
    uv = VERIFICATIONS[how]
    user = PublicKeyCredentialUserEntity(id=b"user-handle-alice", name="alice")
    options, state = server.register_begin(user, user_verification=REQUIRED)
    reg = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=options.public_key.challenge,
        user_name="alice",
        user_handle=user.id,
        verification=uv,
    )
    auth_data = server.register_complete(state, reg.to_json())
    credential = auth_data.credential_data
    assert credential is not None and credential.credential_id == reg.credential_id

    for _ in range(3):
        options, state = server.authenticate_begin([credential], user_verification=REQUIRED)
        assertion = creds.authenticate(
            rp_id=RP,
            origin=ORIGIN,
            challenge=options.public_key.challenge,
            verification=uv,
        )
        # Through a JSON round trip, as a browser app would send it.
        sent = json.loads(json.dumps(assertion.to_json()))
        assert server.authenticate_complete(state, [credential], sent) == credential


def test_fido2_server_refuses_an_unverified_attempt(creds, server):
    uv = VERIFICATIONS["face+liveness"]
    user = PublicKeyCredentialUserEntity(id=b"uid", name="alice")
    options, state = server.register_begin(user, user_verification=REQUIRED)
    reg = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=options.public_key.challenge,
        user_name="alice",
        verification=uv,
    )
    credential = server.register_complete(state, reg.to_json()).credential_data
    options, state = server.authenticate_begin([credential], user_verification=REQUIRED)
    failed = UserVerification(Method.FACE, LivenessClaim("active-challenge", False), "m@1", False)
    assertion = creds.authenticate(
        rp_id=RP, origin=ORIGIN, challenge=options.public_key.challenge, verification=failed
    )
    with pytest.raises(ValueError, match="User Present"):
        server.authenticate_complete(state, [credential], assertion.to_json())


@pytest.mark.parametrize("how", sorted(VERIFICATIONS))
def test_py_webauthn_accepts_registration_and_assertions(creds, how):
    uv = VERIFICATIONS[how]
    challenge = b"registration-challenge-0123456789"
    reg = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=challenge,
        user_name="alice",
        verification=uv,
    )
    verified = webauthn.verify_registration_response(
        credential=json.dumps(reg.to_json()),
        expected_challenge=challenge,
        expected_rp_id=RP,
        expected_origin=ORIGIN,
        require_user_verification=True,
    )
    assert verified.credential_id == reg.credential_id
    assert verified.fmt == "packed" and verified.user_verified
    assert verified.sign_count == 0
    assert verified.credential_device_type == "single_device"
    assert not verified.credential_backed_up

    sign_count = verified.sign_count
    for i in range(3):
        challenge = f"assertion-challenge-{i:04d}-abcdefgh".encode()
        assertion = creds.authenticate(
            rp_id=RP, origin=ORIGIN, challenge=challenge, verification=uv
        )
        result = webauthn.verify_authentication_response(
            credential=assertion.to_json(),
            expected_challenge=challenge,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            credential_public_key=verified.credential_public_key,
            credential_current_sign_count=sign_count,
            require_user_verification=True,
        )
        assert result.new_sign_count == sign_count + 1 and result.user_verified
        sign_count = result.new_sign_count


def test_py_webauthn_sees_the_counter_regression_too(creds):
    reg = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"c" * 32,
        user_name="alice",
        verification=VERIFICATIONS["pin"],
    )
    verified = webauthn.verify_registration_response(
        credential=reg.to_json(),
        expected_challenge=b"c" * 32,
        expected_rp_id=RP,
        expected_origin=ORIGIN,
    )
    old = creds.authenticate(
        rp_id=RP, origin=ORIGIN, challenge=b"a" * 32, verification=VERIFICATIONS["pin"]
    )
    with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
        webauthn.verify_authentication_response(
            credential=old.to_json(),
            expected_challenge=b"a" * 32,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            credential_public_key=verified.credential_public_key,
            credential_current_sign_count=5,
        )


def test_our_verifier_and_both_libraries_agree_on_one_ceremony(creds):
    """One registration and one assertion, checked by all three verifiers."""
    from verifier import Purpose, SQLiteStore, issue_challenge, verify_assertion
    from verifier import verify_registration as ours

    store = SQLiteStore()
    ch = issue_challenge(store, user="alice", purpose=Purpose.REGISTER).value
    # our verifier checks a passed liveness claim against its challenge: bind it to each
    uv = face(ch)
    reg = creds.register(rp_id=RP, origin=ORIGIN, challenge=ch, user_name="alice", verification=uv)
    j = reg.to_json()
    theirs = webauthn.verify_registration_response(
        credential=j,
        expected_challenge=ch,
        expected_rp_id=RP,
        expected_origin=ORIGIN,
        require_user_verification=True,
    )
    mine = ours(
        credential=j,
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        user="alice",
    )
    assert mine.record.public_key == theirs.credential_public_key

    ch = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE).value
    a = creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=ch, verification=face(ch)).to_json()
    theirs_a = webauthn.verify_authentication_response(
        credential=a,
        expected_challenge=ch,
        expected_rp_id=RP,
        expected_origin=ORIGIN,
        credential_public_key=theirs.credential_public_key,
        credential_current_sign_count=0,
        require_user_verification=True,
    )
    mine_a = verify_assertion(
        credential=a, expected_challenge=ch, expected_origin=ORIGIN, expected_rp_id=RP, store=store
    )
    assert mine_a.new_sign_count == theirs_a.new_sign_count == 1


# -- Secure Payment Confirmation assertions -------------------------------------------------
# Neither library knows the payment.get type: both refuse it in their ceremony functions (the
# tests below pin their exact words), and both accept its signature over authenticatorData ||
# SHA-256(clientDataJSON) with their own signature primitives: the bytes are a valid WebAuthn
# assertion, only the type is SPC's.


def _payment_assertion(creds: Credentials) -> tuple[Any, Any]:
    from devicebio.protocol import Amount, Instrument, PaymentDetails

    payment = PaymentDetails(
        rp_id=RP,
        top_origin=ORIGIN,
        payee_name="School canteen",
        total=Amount("EUR", "2.50"),
        instrument=Instrument("Student card 0042", "https://example.com/card.png"),
    )
    reg = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"r" * 32,
        user_name="alice",
        verification=VERIFICATIONS["pin"],
    )
    assertion = creds.authenticate(
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"p" * 32,
        verification=VERIFICATIONS["face+liveness"],
        payment=payment,
    )
    assert json.loads(assertion.client_data_json)["type"] == "payment.get"
    return reg, assertion


def test_fido2_verifies_the_payment_signature_and_its_server_refuses_the_type(creds, server):
    import hashlib

    from cryptography.exceptions import InvalidSignature
    from fido2.cose import CoseKey

    reg, assertion = _payment_assertion(creds)
    attested = AttestationObject(reg.attestation_object).auth_data.credential_data
    assert attested is not None
    key: CoseKey = attested.public_key
    message = assertion.authenticator_data + hashlib.sha256(assertion.client_data_json).digest()
    key.verify(message, assertion.signature)  # python-fido2's COSE verify: accepted
    with pytest.raises(InvalidSignature):
        key.verify(message + b"x", assertion.signature)  # and it is a real check
    _, state = server.authenticate_begin([attested], user_verification=REQUIRED)
    state["challenge"] = "cHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHA"  # b"p" * 32
    with pytest.raises(ValueError, match="Incorrect type in CollectedClientData"):
        server.authenticate_complete(state, [attested], assertion.to_json())


def test_py_webauthn_verifies_the_payment_signature_and_refuses_the_type(creds):
    import hashlib

    from cryptography.exceptions import InvalidSignature
    from webauthn.helpers import (
        decode_credential_public_key,
        decoded_public_key_to_cryptography,
        verify_signature,
    )
    from webauthn.helpers.cose import COSEAlgorithmIdentifier

    reg, assertion = _payment_assertion(creds)
    verified = webauthn.verify_registration_response(
        credential=reg.to_json(), expected_challenge=b"r" * 32, expected_rp_id=RP,
        expected_origin=ORIGIN,
    )  # fmt: skip
    with pytest.raises(
        InvalidAuthenticationResponse,
        # py_webauthn 3.0.1 words it so on Python 3.11 (its enum in an f-string)
        match=re.escape('Unexpected client data type "payment.get", expected "ClientDataType'),
    ):
        webauthn.verify_authentication_response(
            credential=assertion.to_json(),
            expected_challenge=b"p" * 32,
            expected_rp_id=RP,
            expected_origin=ORIGIN,
            credential_public_key=verified.credential_public_key,
            credential_current_sign_count=0,
        )
    # the same two steps verify_authentication_response takes after its type check
    public_key = decoded_public_key_to_cryptography(
        decode_credential_public_key(verified.credential_public_key)
    )
    message = assertion.authenticator_data + hashlib.sha256(assertion.client_data_json).digest()
    verify_signature(
        public_key=public_key,
        signature_alg=COSEAlgorithmIdentifier.EDDSA,
        signature=assertion.signature,
        data=message,
    )  # py_webauthn's own signature check: accepted
    with pytest.raises(InvalidSignature):
        verify_signature(
            public_key=public_key,
            signature_alg=COSEAlgorithmIdentifier.EDDSA,
            signature=assertion.signature,
            data=message + b"x",
        )
