"""verify_registration: the happy paths, and each refusal with its specific reason.

Negative cases that need a *validly signed* but wrong registration are re-signed with the
real credential key read back from the device's vault, so each test proves the check it
names rather than the signature check.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)
from helpers.claims import MODEL, face

from devicebio import protocol
from devicebio.hazmat.credentials import KIND, Credentials, UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store.vault import RawKey, Vault
from verifier import (
    Assurance,
    CredentialRecord,
    Policy,
    Purpose,
    Reason,
    SQLiteStore,
    VerifierError,
    issue_challenge,
    verify_registration,
)

RP = "example.com"
ORIGIN = "https://example.com"
F = AuthenticatorData.FLAG
# FACE stands for "a verified face with passed liveness for the challenge in use" (the
# verifier checks a passed claim against its challenge): _register and _craft bind it.
FACE = face(b"\x00" * 32)
FACE_NO_LIVENESS = UserVerification(Method.FACE, LivenessClaim.none(), MODEL, True)
PIN = UserVerification(Method.PIN, LivenessClaim.none(), None, True)


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "vault", RawKey(b"\x22" * 32))


@pytest.fixture
def creds(vault: Vault) -> Credentials:
    return Credentials(vault)


@pytest.fixture
def store() -> SQLiteStore:
    return SQLiteStore()


def _challenge(store: SQLiteStore, user: str = "alice", purpose: Purpose = Purpose.REGISTER):
    return issue_challenge(store, user=user, purpose=purpose)


def _verify(store: SQLiteStore, credential: Any, challenge: bytes, **kw: Any):
    args: dict[str, Any] = {
        "credential": credential,
        "expected_challenge": challenge,
        "expected_origin": ORIGIN,
        "expected_rp_id": RP,
        "store": store,
        "user": "alice",
    }
    args.update(kw)
    return verify_registration(**args)


def _refused(reason: Reason, store: SQLiteStore, credential: Any, challenge: bytes, **kw: Any):
    with pytest.raises(VerifierError) as info:
        _verify(store, credential, challenge, **kw)
    assert info.value.reason is reason, info.value
    return info.value


def _seed(vault: Vault) -> bytes:
    (rid,) = vault.ids(KIND)
    return vault.get(KIND, rid)["seed"]


def _craft(
    vault: Vault,
    reg: Any,
    *,
    challenge: bytes,
    flags: int = F.UP | F.UV | F.AT | F.ED,
    extensions: Any = "default",
    client_type: str = "webauthn.create",
    fmt: str = "packed",
    att_stmt: dict[str, Any] | None = None,
    cose_key: Any = None,
    rp_id: str = RP,
) -> dict[str, Any]:
    """A registration re-signed with the real credential key, with one thing changed."""
    seed = _seed(vault)
    key = nacl.signing.SigningKey(seed)
    if extensions == "default":
        extensions = face(challenge).extension(device_id=reg.device_id).to_extensions()
    cred = AttestedCredentialData.create(
        protocol.DEVICEBIO_AAGUID,
        reg.credential_id,
        cose_key if cose_key is not None else protocol.ed25519_cose_key(bytes(key.verify_key)),
    )
    ad = AuthenticatorData.create(
        hashlib.sha256(rp_id.encode()).digest(), F(flags), 0, cred, extensions
    )
    cd = CollectedClientData.create(type=client_type, challenge=challenge, origin=ORIGIN)
    sig = key.sign(bytes(ad) + cd.hash).signature
    stmt = att_stmt if att_stmt is not None else {"alg": -8, "sig": sig}
    att = AttestationObject.create(fmt, ad, stmt)
    return protocol.registration_to_json(
        credential_id=reg.credential_id, client_data_json=bytes(cd), attestation_object=att
    )


def _register(creds: Credentials, challenge: bytes, verification=FACE, **kw: Any):
    args: dict[str, Any] = {
        "rp_id": RP,
        "origin": ORIGIN,
        "challenge": challenge,
        "user_name": "alice",
        "verification": verification,
    }
    args.update(kw)
    if args["verification"] is FACE:
        args["verification"] = face(args["challenge"])
    return creds.register(**args)


# ---------------------------------------------------------------- happy paths


def test_registration_is_verified_and_stored(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    result = _verify(store, reg.to_json(), ch.value, user_handle=reg.user_handle)
    assert result.credential_id == reg.credential_id
    assert result.user == "alice"
    assert result.device_id == reg.device_id
    assert result.method is Method.FACE and result.liveness.passed
    assert result.assurance is Assurance.MODERATE and result.user_verified
    assert result.aaguid == protocol.DEVICEBIO_AAGUID
    stored = store.get_credential(reg.credential_id)
    assert stored == result.record
    assert stored.sign_count == 0 and stored.rp_id == RP and stored.user_handle == reg.user_handle
    assert protocol.ed25519_public_key_from_cose(
        stored.public_key
    ) == protocol.ed25519_public_key_from_cose(
        AttestationObject(reg.attestation_object).auth_data.credential_data.public_key
    )
    events = [e for _, e, _ in store.audit_events()]
    assert "credential_registered" in events


@pytest.mark.parametrize(
    ("verification", "assurance"),
    [(FACE, Assurance.MODERATE), (FACE_NO_LIVENESS, Assurance.MODERATE), (PIN, Assurance.WEAKER)],
)
def test_assurance_follows_the_policy(creds, store, verification, assurance):
    ch = _challenge(store)
    reg = _register(creds, ch.value, verification)
    assert _verify(store, reg.to_json(), ch.value).assurance is assurance


def test_json_text_and_bytes_are_accepted(creds, store):
    for as_text in (json.dumps, lambda o: json.dumps(o).encode()):
        ch = _challenge(store)
        reg = _register(creds, ch.value)
        assert _verify(store, as_text(reg.to_json()), ch.value).user == "alice"


# ---------------------------------------------------------------- challenge


def test_wrong_challenge(creds, store):
    ch = _challenge(store)
    reg = _register(creds, b"\x00" * 32)
    _refused(Reason.CHALLENGE_MISMATCH, store, reg.to_json(), ch.value)


def test_reused_challenge(creds, store):
    ch = _challenge(store)
    _verify(store, _register(creds, ch.value).to_json(), ch.value)
    again = _register(creds, ch.value, user_name="alice")
    _refused(Reason.CHALLENGE_REUSED, store, again.to_json(), ch.value)


def test_expired_challenge(creds, store):
    ch = issue_challenge(store, user="alice", purpose=Purpose.REGISTER, ttl=60, now=1000.0)
    reg = _register(creds, ch.value)
    _refused(Reason.CHALLENGE_EXPIRED, store, reg.to_json(), ch.value, now=1061.0)


def test_unknown_challenge(creds, store):
    reg = _register(creds, b"\x07" * 32)
    _refused(Reason.CHALLENGE_UNKNOWN, store, reg.to_json(), b"\x07" * 32)


def test_challenge_for_another_purpose_or_user(creds, store):
    ch = _challenge(store, purpose=Purpose.AUTHENTICATE)
    _refused(Reason.CHALLENGE_WRONG_PURPOSE, store, _register(creds, ch.value).to_json(), ch.value)
    ch = _challenge(store, user="mallory")
    _refused(Reason.CHALLENGE_WRONG_USER, store, _register(creds, ch.value).to_json(), ch.value)


# ---------------------------------------------------------------- origin, rp id, type


def test_wrong_origin(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value, origin="https://login.example.com")
    _refused(Reason.ORIGIN_MISMATCH, store, reg.to_json(), ch.value)


def test_cross_origin_is_refused(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    seed = _seed(vault)
    key = nacl.signing.SigningKey(seed)
    att = AttestationObject(reg.attestation_object)
    cd = CollectedClientData.create(
        type="webauthn.create", challenge=ch.value, origin=ORIGIN, cross_origin=True
    )
    sig = key.sign(bytes(att.auth_data) + cd.hash).signature
    forged = protocol.registration_to_json(
        credential_id=reg.credential_id,
        client_data_json=bytes(cd),
        attestation_object=AttestationObject.create(
            "packed", att.auth_data, {"alg": -8, "sig": sig}
        ),
    )
    _refused(Reason.ORIGIN_MISMATCH, store, forged, ch.value)


def test_wrong_rp_id(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    _refused(Reason.RP_ID_MISMATCH, store, reg.to_json(), ch.value, expected_rp_id="other.org")


def test_wrong_credential_type(creds, store):
    ch = _challenge(store)
    j = _register(creds, ch.value).to_json()
    j["type"] = "password"
    _refused(Reason.WRONG_TYPE, store, j, ch.value)


def test_wrong_client_data_type(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    forged = _craft(vault, reg, challenge=ch.value, client_type="webauthn.get")
    _refused(Reason.WRONG_TYPE, store, forged, ch.value)


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (F.UV | F.AT | F.ED, Reason.USER_NOT_PRESENT),
        (F.UP | F.AT | F.ED, Reason.USER_NOT_VERIFIED),
        (F.UP | F.UV | F.BS | F.AT | F.ED, Reason.BACKUP_FLAGS_INCONSISTENT),
        (F.UP | F.UV | F.BE | F.AT | F.ED, Reason.BACKUP_FLAGS_INCONSISTENT),
        (F.UP | F.UV | F.BE | F.BS | F.AT | F.ED, Reason.BACKUP_FLAGS_INCONSISTENT),
    ],
)
def test_flags(creds, vault, store, flags, reason):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    _refused(reason, store, _craft(vault, reg, challenge=ch.value, flags=flags), ch.value)


def test_uv_may_be_waived_by_policy_and_then_earns_no_assurance(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    forged = _craft(vault, reg, challenge=ch.value, flags=F.UP | F.AT | F.ED)
    result = _verify(store, forged, ch.value, policy=Policy(require_user_verification=False))
    assert not result.user_verified and result.assurance is Assurance.NONE


# ---------------------------------------------------------------- key, attestation


def test_only_eddsa_keys(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    ec_key = ES256.from_cryptography_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    forged = _craft(vault, reg, challenge=ch.value, cose_key=ec_key)
    _refused(Reason.UNSUPPORTED_ALGORITHM, store, forged, ch.value)


def test_attestation_formats(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    _refused(
        Reason.UNSUPPORTED_FORMAT,
        store,
        _craft(vault, reg, challenge=ch.value, fmt="none", att_stmt={}),
        ch.value,
    )


def test_x5c_is_refused(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    att = AttestationObject(reg.attestation_object)
    stmt = {**att.att_stmt, "x5c": [b"\x30\x00"]}
    forged = _craft(vault, reg, challenge=ch.value, att_stmt=stmt)
    _refused(Reason.UNSUPPORTED_FORMAT, store, forged, ch.value)


def test_bad_attestation_signature(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    att = AttestationObject(reg.attestation_object)
    bad = bytearray(att.att_stmt["sig"])
    bad[5] ^= 0x40
    forged = protocol.registration_to_json(
        credential_id=reg.credential_id,
        client_data_json=reg.client_data_json,
        attestation_object=AttestationObject.create(
            "packed", att.auth_data, {"alg": -8, "sig": bytes(bad)}
        ),
    )
    _refused(Reason.BAD_ATTESTATION, store, forged, ch.value)


def test_attestation_alg_must_match_the_key(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    sig = AttestationObject(reg.attestation_object).att_stmt["sig"]
    forged = _craft(vault, reg, challenge=ch.value, att_stmt={"alg": -7, "sig": sig})
    _refused(Reason.BAD_ATTESTATION, store, forged, ch.value)


def test_attestation_signed_by_another_key(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    att = AttestationObject(reg.attestation_object)
    other = nacl.signing.SigningKey.generate()
    cd = CollectedClientData(reg.client_data_json)
    sig = other.sign(bytes(att.auth_data) + cd.hash).signature
    forged = protocol.registration_to_json(
        credential_id=reg.credential_id,
        client_data_json=reg.client_data_json,
        attestation_object=AttestationObject.create(
            "packed", att.auth_data, {"alg": -8, "sig": sig}
        ),
    )
    _refused(Reason.BAD_ATTESTATION, store, forged, ch.value)


# ---------------------------------------------------------------- extension, policy


def test_extension_missing(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    forged = _craft(vault, reg, challenge=ch.value, flags=F.UP | F.UV | F.AT, extensions=None)
    _refused(Reason.EXTENSION_MISSING, store, forged, ch.value)


def test_extension_without_device_id(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    forged = _craft(
        vault, reg, challenge=ch.value, extensions=face(ch.value).extension().to_extensions()
    )
    _refused(Reason.EXTENSION_INVALID, store, forged, ch.value)


def test_unsolicited_extension(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    ext = {**face(ch.value).extension(device_id=reg.device_id).to_extensions(), "credProtect": 1}
    _refused(
        Reason.EXTENSION_INVALID,
        store,
        _craft(vault, reg, challenge=ch.value, extensions=ext),
        ch.value,
    )


def test_invalid_extension_content(creds, vault, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    obj = face(ch.value).extension(device_id=reg.device_id).to_cbor_obj()
    obj["m"] = "iris"
    forged = _craft(vault, reg, challenge=ch.value, extensions={"devicebio": obj})
    _refused(Reason.EXTENSION_INVALID, store, forged, ch.value)


def test_policy_refusing_a_method(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value, PIN)
    policy = Policy(accepted_methods=frozenset({Method.FACE}))
    _refused(Reason.POLICY_METHOD_REFUSED, store, reg.to_json(), ch.value, policy=policy)
    assert store.get_credential(reg.credential_id) is None


def test_policy_requiring_liveness(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value, FACE_NO_LIVENESS)
    _refused(
        Reason.POLICY_LIVENESS_REQUIRED,
        store,
        reg.to_json(),
        ch.value,
        policy=Policy(require_liveness=True),
    )


# ---------------------------------------------------------------- store, malformed


def test_credential_already_registered(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    store.add_credential(
        CredentialRecord(
            credential_id=reg.credential_id,
            user="bob",
            user_handle=b"",
            rp_id=RP,
            public_key=b"\xa0",
            sign_count=0,
            device_id=None,
            created_at=0.0,
        )
    )
    _refused(Reason.CREDENTIAL_EXISTS, store, reg.to_json(), ch.value)
    assert store.get_credential(reg.credential_id).user == "bob"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda j: "not json {",
        lambda j: {**j, "id": "AAAA"},
        lambda j: {**j, "rawId": j["rawId"] + "="},
        lambda j: {**j, "response": {**j["response"], "attestationObject": "AAAA"}},
        lambda j: {**j, "response": {**j["response"], "clientDataJSON": "e30"}},  # "{}"
        lambda j: {**j, "response": {**j["response"], "publicKeyAlgorithm": -7}},
        lambda j: {**j, "extra": 1},
        lambda j: [j],
    ],
)
def test_malformed_responses(creds, store, mutate):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    _refused(Reason.MALFORMED, store, mutate(reg.to_json()), ch.value)


def test_refusals_are_audited(creds, store):
    ch = _challenge(store)
    reg = _register(creds, ch.value)
    _refused(Reason.RP_ID_MISMATCH, store, reg.to_json(), ch.value, expected_rp_id="other.org")
    (_, _, fields), *_ = [e for e in store.audit_events() if e[1] == "registration_refused"]
    assert (
        fields["reason"] == "rp_id_mismatch" and fields["credential_id"] == reg.credential_id.hex()
    )


# ---- revocation ----------------------------------------------------------------------------

_ISSUER = nacl.signing.SigningKey(b"\x31" * 32)


def _install_list(store: SQLiteStore, *entries: Any, next_update: int = 10**10) -> None:
    from verifier import RevocationList, install_revocation_list, sign_revocation_list

    rl = RevocationList(
        issuer="rp-security", serial=1, this_update=1000, next_update=next_update, entries=entries
    )
    data = sign_revocation_list(rl, _ISSUER)
    install_revocation_list(store, data, _ISSUER.verify_key, now=1000)


@pytest.mark.parametrize("which", ["device", "model"])
def test_a_revoked_device_or_model_cannot_register_again(creds, store, which) -> None:
    """Revoking a device must also stop it coming back under a fresh credential."""
    from verifier import EntryKind, RevocationEntry, RevocationReason

    entry = {
        "device": (EntryKind.DEVICE_KEY, creds.device_id(RP)),
        "model": (EntryKind.MODEL_ID, MODEL),
    }[which]
    _install_list(
        store, RevocationEntry(*entry, RevocationReason.USER_KEY_PHYSICAL_COMPROMISE, 1000)
    )
    key = _ISSUER.verify_key
    ch = _challenge(store).value
    _refused(Reason.REVOKED, store, _register(creds, ch).to_json(), ch, revocation_issuer_key=key)
    assert store.credentials_for_user("alice") == []  # nothing was stored
    # the same registration against a list that does not name the device is accepted
    other = SQLiteStore()
    _install_list(other)
    ch = _challenge(other).value
    result = _verify(other, _register(creds, ch).to_json(), ch, revocation_issuer_key=key)
    assert result.user == "alice"


def test_registration_under_a_stale_or_missing_list_fails_closed(creds, store) -> None:
    key = _ISSUER.verify_key
    ch = _challenge(store).value
    reg = _register(creds, ch).to_json()
    _refused(Reason.REVOCATION_LIST_MISSING, store, reg, ch, revocation_issuer_key=key)
    _install_list(store, next_update=2000)
    ch = issue_challenge(store, user="alice", purpose=Purpose.REGISTER, now=2500.0).value
    reg = _register(creds, ch).to_json()
    _refused(Reason.REVOCATION_LIST_STALE, store, reg, ch, revocation_issuer_key=key, now=2500.0)


def test_a_revocation_key_of_the_wrong_type_is_a_caller_error(creds, store) -> None:
    ch = _challenge(store).value
    reg = _register(creds, ch).to_json()
    _refused(Reason.MALFORMED, store, reg, ch, revocation_issuer_key=b"k")


def test_an_early_sign_up_challenge_cannot_take_over_the_account(
    tmp_path: Path, store: SQLiteStore, creds: Credentials
) -> None:
    """Self-service sign-up: an attacker asks for alice's register challenge before she
    signs up; once she has, the early challenge must not add the attacker's device."""
    early = _challenge(store)  # the attacker's, asked for before alice existed
    mine = _challenge(store)
    alice = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=mine.value,
        user_name="alice",
        verification=face(mine.value),
    )
    _verify(store, alice.to_json(), mine.value, first_credential_only=True)
    attacker = Credentials(Vault.create(tmp_path / "attacker", RawKey(b"\x66" * 32)))
    theirs = attacker.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=early.value,
        user_name="alice",
        verification=face(early.value),
    )
    _refused(
        Reason.USER_ALREADY_REGISTERED,
        store,
        theirs.to_json(),
        early.value,
        first_credential_only=True,
    )
    assert len(store.credentials_for_user("alice")) == 1
