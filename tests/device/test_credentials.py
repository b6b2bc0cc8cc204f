"""Device credentials: keys only in the vault, counter persisted before a signature leaves."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from fido2.webauthn import AttestationObject, AuthenticatorData, CollectedClientData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicebio import protocol
from devicebio.errors import DeviceBioError, Reason
from devicebio.hazmat.credentials import KIND, Credentials, UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store.vault import RawKey, Vault

RP = "example.com"
ORIGIN = "https://example.com"
KEY = RawKey(b"\x11" * 32)
CHALLENGE = b"c" * 32

FACE = UserVerification(
    method=Method.FACE,
    liveness=LivenessClaim("active-challenge", True, b"\x01" * 32, 24),
    model="dlib-resnet-v1@1a2b3c4d",
    verified=True,
)
PIN = UserVerification(Method.PIN, LivenessClaim.none(), None, verified=True)
FAILED_FACE = UserVerification(
    Method.FACE, LivenessClaim("active-challenge", False, None, 24), "m@1", verified=False
)


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "vault", KEY)


@pytest.fixture
def creds(vault: Vault) -> Credentials:
    return Credentials(vault)


def _register(creds: Credentials, user: str = "alice", rp: str = RP, origin: str = ORIGIN):
    return creds.register(
        rp_id=rp, origin=origin, challenge=CHALLENGE, user_name=user, verification=FACE
    )


def _records(vault: Vault) -> list[dict[str, Any]]:
    return [vault.get(KIND, rid) for rid in vault.ids(KIND)]


def test_registration_is_packed_self_attestation_with_devicebio_extension(creds, vault):
    reg = _register(creds)
    att = AttestationObject(reg.attestation_object)
    assert att.fmt == "packed"
    assert set(att.att_stmt) == {"alg", "sig"}  # self-attestation: no x5c
    assert att.att_stmt["alg"] == -8
    ad = att.auth_data
    assert ad.rp_id_hash == hashlib.sha256(RP.encode()).digest()
    assert ad.is_user_present() and ad.is_user_verified() and ad.is_attested()
    assert not ad.is_backup_eligible() and not ad.is_backed_up()
    assert ad.counter == 0
    assert ad.credential_data is not None
    assert ad.credential_data.aaguid == protocol.DEVICEBIO_AAGUID
    assert ad.credential_data.credential_id == reg.credential_id
    key = ad.credential_data.public_key
    assert dict(key) == {1: 1, 3: -8, -1: 6, -2: key[-2]}
    ext = protocol.devicebio_extension_of(ad)
    assert ext is not None and ext.method is Method.FACE and ext.device_id == reg.device_id
    assert ext.liveness == FACE.liveness and ext.model == FACE.model
    # The self-attestation signature verifies with the credential key.
    cd = CollectedClientData(reg.client_data_json)
    assert cd.type == "webauthn.create" and cd.challenge == CHALLENGE and cd.origin == ORIGIN
    nacl.signing.VerifyKey(key[-2]).verify(bytes(ad) + cd.hash, att.att_stmt["sig"])


def test_key_lives_only_in_the_vault(creds, vault):
    reg = _register(creds)
    (record,) = _records(vault)
    seed = record["seed"]
    public = bytes(nacl.signing.SigningKey(seed).verify_key)
    att = AttestationObject(reg.attestation_object)
    assert att.auth_data.credential_data.public_key[-2] == public
    # Neither the Credentials object nor anything it returns holds the private key.
    assert set(vars(creds)) == {"_vault", "_lock"}
    for obj in (reg, creds.list()[0]):
        for value in vars(obj).values():
            assert value != seed
    assert seed.hex() not in repr(reg.to_json()) and protocol.b64url_encode(seed) not in repr(
        reg.to_json()
    )
    # And the vault's files do not hold it in the clear.
    for path in Path(vault.path).rglob("*"):
        if path.is_file():
            assert seed not in path.read_bytes()


def test_counter_is_persisted_before_the_signature_is_released(creds, vault):
    _register(creds)
    for expected in (1, 2, 3):
        assertion = creds.authenticate(
            rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE
        )
        assert assertion.sign_count == expected
        assert AuthenticatorData(assertion.authenticator_data).counter == expected
        # A fresh handle on the same directory (as after a crash) sees the new counter.
        reopened = Vault.open(vault.path, KEY)
        assert [r["counter"] for r in _records(reopened)] == [expected]


class _FailingVault(Vault):
    """A real vault whose writes fail on demand, as a full disk would."""

    fail_puts = False

    def put(self, kind: str, record_id: str, value: Any) -> None:
        if self.fail_puts:
            raise DeviceBioError(Reason.RECORD_CORRUPT, "disk full")
        super().put(kind, record_id, value)


def test_no_signature_when_the_counter_cannot_be_persisted(tmp_path):
    Vault.create(tmp_path / "v", KEY)
    vault = _FailingVault.open(tmp_path / "v", KEY)
    creds = Credentials(vault)
    _register(creds)
    vault.fail_puts = True
    with pytest.raises(DeviceBioError) as info:
        creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    assert info.value.reason is Reason.RECORD_CORRUPT
    vault.fail_puts = False
    assertion = creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    assert assertion.sign_count == 1  # the failed attempt signed nothing


def test_assertion_signature_and_flags(creds):
    reg = _register(creds)
    a = creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=PIN)
    ad = AuthenticatorData(a.authenticator_data)
    cd = CollectedClientData(a.client_data_json)
    assert cd.type == "webauthn.get"
    assert ad.flags == AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.UV | (
        AuthenticatorData.FLAG.ED
    )
    ext = protocol.devicebio_extension_of(ad)
    assert ext is not None
    assert ext.method is Method.PIN and ext.assurance == "weaker" and ext.device_id is None
    key = AttestationObject(reg.attestation_object).auth_data.credential_data.public_key
    nacl.signing.VerifyKey(key[-2]).verify(a.authenticator_data + cd.hash, a.signature)
    assert a.credential_id == reg.credential_id and a.user_handle == reg.user_handle


def test_unverified_attempt_has_neither_up_nor_uv_but_still_counts(creds):
    _register(creds)
    a = creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FAILED_FACE)
    ad = AuthenticatorData(a.authenticator_data)
    assert not ad.is_user_present() and not ad.is_user_verified()
    assert ad.counter == 1
    ext = protocol.devicebio_extension_of(ad)
    assert ext is not None and ext.liveness.passed is False


def test_registration_requires_a_verified_user(creds, vault):
    with pytest.raises(DeviceBioError) as info:
        creds.register(
            rp_id=RP,
            origin=ORIGIN,
            challenge=CHALLENGE,
            user_name="alice",
            verification=FAILED_FACE,
        )
    assert info.value.reason is Reason.USER_NOT_VERIFIED
    assert _records(vault) == []


def test_device_id_is_per_rp(creds):
    a = _register(creds, rp="example.com", origin="https://example.com")
    b = _register(creds, rp="other.org", origin="https://other.org")
    again = _register(creds, user="bob", rp="example.com", origin="https://example.com")
    assert a.device_id != b.device_id
    assert a.device_id == again.device_id == creds.device_id("example.com")
    assert len(a.device_id) == 16


def test_list_remove_and_reregister(creds):
    first = _register(creds, "alice")
    _register(creds, "bob")
    assert sorted(i.user for i in creds.list()) == ["alice", "bob"]
    replaced = _register(creds, "alice")
    assert replaced.credential_id != first.credential_id
    assert {i.credential_id for i in creds.list() if i.user == "alice"} == {replaced.credential_id}
    creds.remove(RP, "alice")
    assert [i.user for i in creds.list()] == ["bob"]
    with pytest.raises(DeviceBioError) as info:
        creds.remove(RP, "alice")
    assert info.value.reason is Reason.CREDENTIAL_NOT_FOUND


def test_credential_selection(creds):
    with pytest.raises(DeviceBioError) as info:
        creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    assert info.value.reason is Reason.CREDENTIAL_NOT_FOUND
    alice = _register(creds, "alice")
    bob = _register(creds, "bob")
    with pytest.raises(DeviceBioError) as info:
        creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    assert info.value.reason is Reason.INVALID_ARGUMENT
    for reg in (alice, bob):
        a = creds.authenticate(
            rp_id=RP,
            origin=ORIGIN,
            challenge=CHALLENGE,
            verification=FACE,
            credential_id=reg.credential_id,
        )
        assert a.user == reg.user and a.sign_count == 1
    with pytest.raises(DeviceBioError) as info:
        creds.authenticate(
            rp_id="other.org",
            origin="https://other.org",
            challenge=CHALLENGE,
            verification=FACE,
            credential_id=alice.credential_id,
        )
    assert info.value.reason is Reason.CREDENTIAL_NOT_FOUND


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"origin": "https://evil.example.net"}, Reason.INVALID_ARGUMENT),  # phishing origin
        ({"origin": "http://example.com"}, Reason.INVALID_ARGUMENT),  # not a secure context
        ({"rp_id": "Example.COM", "origin": "https://example.com"}, Reason.INVALID_ARGUMENT),
        ({"challenge": b"short"}, Reason.INVALID_ARGUMENT),
        ({"challenge": "not-bytes"}, Reason.INVALID_ARGUMENT),
        ({"user_name": ""}, Reason.INVALID_ARGUMENT),
        ({"user_handle": b""}, Reason.INVALID_ARGUMENT),
        ({"user_handle": b"x" * 65}, Reason.INVALID_ARGUMENT),
    ],
)
def test_register_refuses_bad_arguments(creds, kwargs, reason):
    args: dict[str, Any] = {
        "rp_id": RP,
        "origin": ORIGIN,
        "challenge": CHALLENGE,
        "user_name": "alice",
        "verification": FACE,
    }
    args.update(kwargs)
    with pytest.raises(DeviceBioError) as info:
        creds.register(**args)
    assert info.value.reason is reason


def test_subdomain_origin_may_use_parent_rp_id(creds):
    reg = _register(creds, origin="https://login.example.com")
    assert CollectedClientData(reg.client_data_json).origin == "https://login.example.com"


def test_user_verification_validates():
    with pytest.raises(DeviceBioError) as info:
        UserVerification("iris", LivenessClaim.none(), None, True)  # type: ignore[arg-type]
    assert info.value.reason is Reason.INVALID_ARGUMENT
    with pytest.raises(DeviceBioError):
        UserVerification(Method.PIN, LivenessClaim.none(), None, 1)  # type: ignore[arg-type]
    with pytest.raises(DeviceBioError):
        # Only the face method carries a liveness check: the extension refuses the mix.
        UserVerification(Method.PIN, FACE.liveness, None, True).extension()


def test_counter_survives_reopening_the_vault(tmp_path):
    path = tmp_path / "v"
    creds = Credentials(Vault.create(path, KEY))
    _register(creds)
    creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    again = Credentials(Vault.open(path, KEY))
    a = again.authenticate(rp_id=RP, origin=ORIGIN, challenge=CHALLENGE, verification=FACE)
    assert a.sign_count == 2


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    user=st.text(min_size=1, max_size=40),
    challenge=st.binary(min_size=16, max_size=128),
    handle=st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
)
def test_any_valid_input_gives_a_verifiable_pair(tmp_path_factory, user, challenge, handle):
    creds = Credentials(Vault.create(tmp_path_factory.mktemp("v") / "v", KEY))
    reg = creds.register(
        rp_id=RP,
        origin=ORIGIN,
        challenge=challenge,
        user_name=user,
        user_handle=handle,
        verification=PIN,
    )
    parsed = protocol.parse_registration_json(reg.to_json())
    key = parsed.attestation.auth_data.credential_data.public_key
    a = creds.authenticate(rp_id=RP, origin=ORIGIN, challenge=challenge, verification=PIN)
    got = protocol.parse_authentication_json(a.to_json())
    assert got.client_data.challenge == challenge
    assert got.user_handle == reg.user_handle and (handle is None or handle == reg.user_handle)
    nacl.signing.VerifyKey(key[-2]).verify(
        bytes(got.authenticator_data) + got.client_data.hash, got.signature
    )
