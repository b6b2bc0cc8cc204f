"""Known-answer vectors (tests/vectors/): the code must still produce and accept these bytes.

Deterministic vectors are checked byte for byte (extension CBOR, authenticatorData, signed
revocation lists: Ed25519 is deterministic). Sealed vault records carry random nonces, so
they are checked by opening them with the published key. Every negative vector must be
refused with exactly its documented Reason. See tests/vectors/README.md for provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from fido2 import cbor

from devicebio import protocol
from devicebio.errors import DeviceBioError
from devicebio.errors import Reason as DReason
from devicebio.protocol import DevicebioExtension, LivenessClaim, Method, ProtocolError
from devicebio.store.vault import HEADER, RawKey, Vault
from verifier import (
    Purpose,
    RevocationEntry,
    RevocationList,
    SQLiteStore,
    VerifierError,
    install_revocation_list,
    parse_revocation_list,
    sign_revocation_list,
    verify_assertion,
    verify_registration,
)
from verifier.errors import Reason as VReason
from verifier.revocation import (
    EntryKind,
    RevocationReason,
    check_not_revoked,
    revocation_list_to_json,
)
from verifier.store import CredentialRecord

VECTORS = Path(__file__).parent / "vectors"
EXTENSION = json.loads((VECTORS / "devicebio-extension-v1.json").read_text())
REVOCATION = json.loads((VECTORS / "revocation-list-v1.json").read_text())
VAULT = json.loads((VECTORS / "vault-v1.json").read_text())
KAT = json.loads((VECTORS / "webauthn-kat-v3.json").read_text())
KAT_V2 = json.loads((VECTORS / "webauthn-kat-v2.json").read_text())
PAYMENT = json.loads((VECTORS / "payment-v2.json").read_text())
PROVENANCE_KEYS = {
    "generated_by",
    "generated_at",
    "devicebio_version",
    "git_commit",
    "python",
    "libraries",
    "deterministic",
}


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"bytes_hex"}:
            return bytes.fromhex(obj["bytes_hex"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


@pytest.mark.parametrize(
    "vec",
    [EXTENSION, REVOCATION, VAULT, KAT, PAYMENT],
    ids=["ext", "rl", "vault", "webauthn", "payment"],
)
def test_every_vector_file_says_where_it_came_from(vec: dict[str, Any]) -> None:
    assert vec["format_version"] == {id(KAT): 3, id(PAYMENT): 2}.get(id(vec), 1)
    assert set(vec["provenance"]) >= PROVENANCE_KEYS
    assert vec["description"]


def test_the_webauthn_vector_referenced_by_the_readme_is_still_there() -> None:
    # tests/protocol/test_properties.py checks it; this only pins its location and version.
    vec = json.loads((VECTORS / "webauthn-v1.json").read_text())
    assert vec["format_version"] == 1
    assert "tests/vectors/webauthn-v1.json" in (VECTORS / "README.md").read_text()


# --------------------------------------------------------------------------- extension


def _extension(fields: dict[str, Any]) -> DevicebioExtension:
    live = fields["liveness"]
    seq = live["sequence_hash_hex"]
    return DevicebioExtension(
        version=fields["version"],
        method=Method(fields["method"]),
        liveness=LivenessClaim(
            kind=live["kind"],
            passed=live["passed"],
            frames=live["frames"],
            sequence_hash=bytes.fromhex(seq) if seq else None,
        ),
        model=fields["model"],
        assurance=fields["assurance"],
        device_id=bytes.fromhex(fields["device_id_hex"]) if fields["device_id_hex"] else None,
        sdk_version=fields["sdk_version"],
    )


@pytest.mark.parametrize("case", EXTENSION["positive"], ids=_ids(EXTENSION["positive"]))
def test_extension_encodes_byte_for_byte(case: dict[str, Any]) -> None:
    from fido2.webauthn import AuthenticatorData

    ext = _extension(case["fields"])
    assert cbor.encode(ext.to_cbor_obj()).hex() == case["extension_cbor_hex"]
    auth = AuthenticatorData.create(
        bytes.fromhex(case["authenticator_data_hex"])[:32],
        AuthenticatorData.FLAG(EXTENSION["flags"]),
        EXTENSION["counter"],
        extensions=ext.to_extensions(),
    )
    assert bytes(auth).hex() == case["authenticator_data_hex"]


@pytest.mark.parametrize("case", EXTENSION["positive"], ids=_ids(EXTENSION["positive"]))
def test_extension_decodes_to_the_documented_fields(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["authenticator_data_hex"])
    parsed = protocol.parse_authenticator_data(raw)
    assert bytes(parsed) == raw
    assert parsed.rp_id_hash == hashlib.sha256(EXTENSION["rp_id"].encode()).digest()
    assert int(parsed.flags) == EXTENSION["flags"]
    assert parsed.counter == EXTENSION["counter"]
    assert protocol.devicebio_extension_of(parsed) == _extension(case["fields"])
    # The wire form never grows a field the schema does not name.
    assert set(cbor.decode(bytes.fromhex(case["extension_cbor_hex"]))) <= {
        "v",
        "m",
        "l",
        "md",
        "a",
        "d",
        "s",
    }


@pytest.mark.parametrize("case", EXTENSION["negative"], ids=_ids(EXTENSION["negative"]))
def test_extension_negative_vectors_are_refused(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["authenticator_data_hex"])
    with pytest.raises(ProtocolError) as info:
        protocol.devicebio_extension_of(protocol.parse_authenticator_data(raw))
    assert info.value.reason.value == case["expect_reason"]


# --------------------------------------------------------------------------- revocation

_ISSUER = nacl.signing.SigningKey(bytes.fromhex(REVOCATION["issuer_seed_hex"]))
_ISSUER_PUB = _ISSUER.verify_key


def _list_from_json(decoded: dict[str, Any]) -> RevocationList:
    entries = []
    for e in decoded["entries"]:
        kind = EntryKind(e["kind"])
        if e["value_encoding"] == "base64url":
            value: bytes | str = protocol.b64url_decode(e["value"])
        elif e["value_encoding"] == "hex":
            value = bytes.fromhex(e["value"])
        else:
            value = e["value"]
        entries.append(RevocationEntry(kind, value, RevocationReason(e["reason"]), e["revoked_at"]))
    return RevocationList(
        issuer=decoded["issuer"],
        serial=decoded["serial"],
        this_update=decoded["this_update"],
        next_update=decoded["next_update"],
        entries=tuple(entries),
    )


_LISTS = ["list", "older_list", "same_serial_other_content", "newer_list"]


def test_issuer_key_matches_the_published_seed() -> None:
    assert bytes(_ISSUER_PUB).hex() == REVOCATION["issuer_public_key_hex"]


@pytest.mark.parametrize("name", _LISTS)
def test_revocation_list_signs_byte_for_byte(name: str) -> None:
    vec = REVOCATION[name]
    rl = _list_from_json(vec["decoded"])
    kid = bytes.fromhex(REVOCATION["kid_hex"])
    assert sign_revocation_list(rl, _ISSUER, kid=kid).hex() == vec["cose_sign1_hex"]


@pytest.mark.parametrize("name", _LISTS)
def test_revocation_list_parses_to_the_expected_json(name: str) -> None:
    vec = REVOCATION[name]
    rl = parse_revocation_list(bytes.fromhex(vec["cose_sign1_hex"]), _ISSUER_PUB)
    assert revocation_list_to_json(rl) == vec["decoded"]


def test_revocation_list_layers_are_as_documented() -> None:
    vec = REVOCATION["list"]
    message = cbor2.loads(bytes.fromhex(vec["cose_sign1_hex"]))
    assert message.tag == 18
    protected, unprotected, payload, signature = message.value
    assert protected == b"\xa1\x01\x27"
    assert unprotected == {4: bytes.fromhex(REVOCATION["kid_hex"])}
    assert payload.hex() == vec["payload_hex"]
    assert signature.hex() == vec["signature_hex"]
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)
    assert sig_structure.hex() == vec["sig_structure_hex"]
    _ISSUER_PUB.verify(sig_structure, signature)  # raises if not
    assert set(cbor2.loads(payload)) == {1, 2, 3, 4, 5, 6}


@pytest.mark.parametrize("case", REVOCATION["negative"], ids=_ids(REVOCATION["negative"]))
def test_revocation_negative_vectors_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises(VerifierError) as info:
        parse_revocation_list(bytes.fromhex(case["cose_sign1_hex"]), _ISSUER_PUB)
    assert info.value.reason.value == case["expect_reason"]


def test_revocation_install_sequence_gives_the_documented_reasons() -> None:
    store = SQLiteStore()
    for step in REVOCATION["install_sequence"]:
        data = bytes.fromhex(REVOCATION[step["install"]]["cose_sign1_hex"])
        if step["expect"] == "ok":
            install_revocation_list(store, data, _ISSUER_PUB, now=step["now"])
        else:
            with pytest.raises(VerifierError) as info:
                install_revocation_list(store, data, _ISSUER_PUB, now=step["now"])
            assert info.value.reason.value == step["expect"], step
    assert store.get_revocation_state() == (
        8,
        bytes.fromhex(REVOCATION["newer_list"]["cose_sign1_hex"]),
    )


@pytest.mark.parametrize("case", REVOCATION["checks_against_list"])
def test_revocation_checks_against_the_list(case: dict[str, Any]) -> None:
    store = SQLiteStore()
    data = bytes.fromhex(REVOCATION["list"]["cose_sign1_hex"])
    install_revocation_list(
        store, data, _ISSUER_PUB, now=REVOCATION["list"]["decoded"]["this_update"]
    )

    def check() -> None:
        check_not_revoked(
            store,
            _ISSUER_PUB,
            credential_id=bytes.fromhex(case["credential_id_hex"]),
            device_id=bytes.fromhex(case["device_id_hex"]) if "device_id_hex" in case else None,
            model_id=case.get("model_id"),
            sdk_version=case.get("sdk_version"),
            now=case["now"],
        )

    if case["expect"] == "ok":
        check()
    else:
        with pytest.raises(VerifierError) as info:
            check()
        assert info.value.reason.value == case["expect"]


# --------------------------------------------------------------------------- vault


def _materialise(root: Path, header: bytes | None = None) -> Path:
    """Write the vector's vault (header + every record file) into ``root``, mode 0700."""
    vault_dir = root / "vault"
    vault_dir.mkdir(mode=0o700)
    os.chmod(vault_dir, 0o700)
    (vault_dir / HEADER).write_bytes(header or bytes.fromhex(VAULT["header_hex"]))
    for rec in VAULT["records"]:
        path = vault_dir / rec["file"]
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_bytes(bytes.fromhex(rec["record_hex"]))
    return vault_dir


def _open(root: Path) -> Vault:
    return Vault.open(_materialise(root), RawKey(bytes.fromhex(VAULT["raw_key_hex"])))


def test_vault_header_is_canonical_cbor_of_the_documented_fields() -> None:
    raw = bytes.fromhex(VAULT["header_hex"])
    header = cbor2.loads(raw)
    assert cbor2.dumps(header, canonical=True) == raw
    assert set(header) == {"format", "v", "id", "kdf", "check"}
    assert header == _from_jsonable(VAULT["header"])
    assert header["format"] == "devicebio-vault" and header["v"] == 1
    assert header["kdf"] == {"alg": "raw"}


@pytest.mark.parametrize("rec", VAULT["records"], ids=[f"{r['kind']}" for r in VAULT["records"]])
def test_vault_record_opens_to_the_expected_value(tmp_path: Path, rec: dict[str, Any]) -> None:
    vault = _open(tmp_path)
    value = vault.get(rec["kind"], rec["id"])
    assert value == _from_jsonable(rec["expected_value"])
    assert cbor2.dumps(value).hex() == rec["expected_value_cbor_hex"]
    blob = bytes.fromhex(rec["record_hex"])
    assert blob[:4] == b"DBV1" and blob[4:20].hex() == rec["slot_hex"]
    assert vault._slot(rec["kind"], rec["id"]).hex() == rec["slot_hex"]
    assert vault._aad(rec["kind"], blob[4:20]).hex() == rec["aad_hex"]


def test_vault_lists_every_record_id(tmp_path: Path) -> None:
    vault = _open(tmp_path)
    for kind in {r["kind"] for r in VAULT["records"]}:
        want = sorted(r["id"] for r in VAULT["records"] if r["kind"] == kind)
        assert vault.ids(kind) == want


def test_vault_records_are_usable_by_the_code_that_reads_them(tmp_path: Path) -> None:
    """Opening is not enough: each record must still mean what its writer meant."""
    from devicebio.fallback import AttemptLimiter, Pin, RecoveryCodes
    from devicebio.hazmat.credentials import Credentials, UserVerification

    facts = VAULT["facts"]
    vault = _open(tmp_path)
    creds = Credentials(vault)
    assert creds.device_id(facts["rp_id"]).hex() == facts["device_id_hex"]
    [info] = creds.list()
    assert (info.rp_id, info.user, info.sign_count) == (facts["rp_id"], facts["user"], 0)

    limiter = AttemptLimiter(vault, clock=lambda: float(facts["attempts_clock"]))
    status = limiter.status()
    assert (status.allowed, status.consecutive_failures) == (True, 2)

    pin = Pin(vault)
    with pytest.raises(DeviceBioError) as info_:
        pin.verify("000000" if facts["pin"] != "000000" else "111111")
    assert info_.value.reason is DReason.PIN_WRONG
    pin.verify(facts["pin"])

    codes = RecoveryCodes(vault)
    assert codes.remaining() == len(facts["recovery_codes"])
    codes.use(facts["recovery_codes"][0].lower())  # normalisation is part of the format
    assert codes.remaining() == len(facts["recovery_codes"]) - 1

    # The credential key inside the vault signs an assertion that a verifier, having
    # registered the stored registration, accepts.
    store = SQLiteStore()
    reg_challenge = bytes.fromhex(facts["registration_challenge_hex"])
    store.insert_challenge(reg_challenge, facts["user"], Purpose.REGISTER.value, 1e12)
    verify_registration(
        credential=facts["registration"],
        expected_challenge=reg_challenge,
        expected_origin=facts["origin"],
        expected_rp_id=facts["rp_id"],
        store=store,
        user=facts["user"],
        user_handle=bytes.fromhex(facts["user_handle_hex"]),
    )
    challenge = b"devicebio-vector-v1-vault-assert"
    store.insert_challenge(challenge, facts["user"], Purpose.AUTHENTICATE.value, 1e12)
    assertion = creds.authenticate(
        rp_id=facts["rp_id"],
        origin=facts["origin"],
        challenge=challenge,
        verification=UserVerification(
            method=Method.PIN, liveness=LivenessClaim.none(), model=None, verified=True
        ),
    )
    ok = verify_assertion(
        credential=assertion.to_json(),
        expected_challenge=challenge,
        expected_origin=facts["origin"],
        expected_rp_id=facts["rp_id"],
        store=store,
    )
    assert ok.new_sign_count == 1


def test_vault_face_records_hold_the_protected_synthetic_templates(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy", reason="protected face templates need the [device] extra")
    from devicebio.authenticator import CONSENT, FACE, FACE_KEY, Authenticator
    from devicebio.protect import TemplateKey

    facts = VAULT["facts"]
    vault = _open(tmp_path)
    rid = facts["face_record_id"]
    key = TemplateKey.from_record(vault.get(FACE_KEY, rid))
    assert key == TemplateKey(bytes.fromhex(facts["template_key_seed_hex"]))
    raw = np.stack(
        [np.frombuffer(bytes.fromhex(h), "<f4") for h in facts["synthetic_embeddings_f32le_hex"]]
    )
    stored = np.stack([np.frombuffer(t, "<f4") for t in vault.get(FACE, rid)["templates"]])
    # Same transform on every platform up to float32 rounding (see devicebio/protect.py).
    assert np.allclose(key.protect(raw), stored, atol=1e-5)
    assert vault.get(CONSENT, rid)["retention_days"] == 365
    [user] = Authenticator(vault, clock=lambda: float(facts["attempts_clock"])).users()
    assert (user.user, user.templates, user.purpose) == (
        facts["user"],
        3,
        "sign-in to example.com",
    )


_TAMPERED = VAULT["tampered_records"]


@pytest.mark.parametrize("case", _TAMPERED, ids=_ids(_TAMPERED))
def test_vault_tampered_records_give_their_reason(tmp_path: Path, case: dict[str, Any]) -> None:
    vault = _open(tmp_path)
    (vault.path / case["write_to"]).parent.mkdir(mode=0o700, exist_ok=True)
    (vault.path / case["write_to"]).write_bytes(bytes.fromhex(case["record_hex"]))
    with pytest.raises(DeviceBioError) as info:
        vault.get(case["get_kind"], case["get_id"])
    assert info.value.reason.value == case["expect_reason"]


@pytest.mark.parametrize("case", VAULT["tampered_headers"], ids=_ids(VAULT["tampered_headers"]))
def test_vault_tampered_headers_give_their_reason(tmp_path: Path, case: dict[str, Any]) -> None:
    vault_dir = _materialise(tmp_path, bytes.fromhex(case["header_hex"]))
    with pytest.raises(DeviceBioError) as info:
        Vault.open(vault_dir, RawKey(bytes.fromhex(VAULT["raw_key_hex"])))
    assert info.value.reason.value == case["expect_reason"]


def test_vault_refuses_the_wrong_key(tmp_path: Path) -> None:
    vault_dir = _materialise(tmp_path)
    with pytest.raises(DeviceBioError) as info:
        Vault.open(vault_dir, RawKey(bytes.fromhex(VAULT["wrong_key"]["raw_key_hex"])))
    assert info.value.reason.value == VAULT["wrong_key"]["expect_reason"]


def test_vault_vector_is_not_modified_by_opening(tmp_path: Path) -> None:
    vault = _open(tmp_path)
    before = {p: p.read_bytes() for p in vault.path.rglob("*") if p.is_file()}
    for rec in VAULT["records"]:
        vault.get(rec["kind"], rec["id"])
    after = {p: p.read_bytes() for p in vault.path.rglob("*") if p.is_file()}
    assert before == after


def test_verifier_reason_names_used_by_vectors_exist() -> None:
    used = {c["expect_reason"] for c in REVOCATION["negative"]}
    used |= {s["expect"] for s in REVOCATION["install_sequence"]} - {"ok"}
    used |= {c["expect"] for c in REVOCATION["checks_against_list"]} - {"ok"}
    assert used <= {r.value for r in VReason}
    used |= {c["expect_reason"] for c in KAT["negative_assertions"] + KAT["negative_registrations"]}
    device = {c["expect_reason"] for c in EXTENSION["negative"]}
    device |= {c["expect_reason"] for c in _TAMPERED + VAULT["tampered_headers"]}
    assert device <= {r.value for r in DReason}


# --------------------------------------------------------------------------- webauthn KAT

_CRED_KEY = nacl.signing.SigningKey(bytes.fromhex(KAT["credential_seed_hex"]))


def _ext_from_cbor(hex_: str) -> DevicebioExtension:
    return DevicebioExtension.from_cbor_obj(cbor.decode(bytes.fromhex(hex_)))


def test_kat_registration_rebuilds_byte_for_byte() -> None:
    from fido2.webauthn import AttestationObject, AuthenticatorData, CollectedClientData

    reg = KAT["registration"]
    raw = reg["bytes"]
    assert bytes(_CRED_KEY.verify_key).hex() == KAT["credential_public_key_hex"]
    ext = _ext_from_cbor(reg["extension_cbor_hex"])
    assert ext.device_id is not None and ext.device_id.hex() == KAT["device_id_hex"]
    cred_id = bytes.fromhex(KAT["credential_id_hex"])
    att_cred = protocol.attested_credential_data(cred_id, bytes(_CRED_KEY.verify_key))
    flags = AuthenticatorData.FLAG
    auth = AuthenticatorData.create(
        hashlib.sha256(KAT["rp_id"].encode()).digest(),
        flags.UP | flags.UV | flags.AT | flags.ED,
        0,
        att_cred,
        ext.to_extensions(),
    )
    assert bytes(auth).hex() == raw["authenticator_data_hex"]
    client = CollectedClientData.create(
        type="webauthn.create",
        challenge=bytes.fromhex(reg["challenge_hex"]),
        origin=KAT["origin"],
    )
    assert bytes(client).decode() == raw["client_data_json"]
    assert client.hash.hex() == raw["client_data_hash_hex"]
    signature = _CRED_KEY.sign(bytes(auth) + client.hash).signature
    assert signature.hex() == raw["signature_hex"]
    att = AttestationObject.create("packed", auth, {"alg": -8, "sig": signature})
    assert bytes(att).hex() == raw["attestation_object_hex"]
    as_json = protocol.registration_to_json(
        credential_id=cred_id, client_data_json=bytes(client), attestation_object=bytes(att)
    )
    assert as_json == reg["credential"]
    layout = raw["layout"]
    blob = bytes.fromhex(raw["authenticator_data_hex"])
    assert blob[:32].hex() == layout["rp_id_hash_hex"]
    assert blob[32] == layout["flags"]
    assert int.from_bytes(blob[33:37], "big") == layout["sign_count"]
    assert blob[37:53].hex() == layout["aaguid_hex"] == bytes(protocol.DEVICEBIO_AAGUID).hex()
    assert int.from_bytes(blob[53:55], "big") == layout["credential_id_length"]
    end_id = 55 + layout["credential_id_length"]
    assert blob[55:end_id].hex() == layout["credential_id_hex"]
    cose = bytes.fromhex(layout["credential_public_key_cose_hex"])
    assert blob[end_id : end_id + len(cose)] == cose
    assert blob[end_id + len(cose) :].hex() == layout["extensions_cbor_hex"]
    assert protocol.ed25519_public_key_from_cose(cose) == bytes(_CRED_KEY.verify_key)


@pytest.mark.parametrize("case", KAT["assertions"], ids=_ids(KAT["assertions"]))
def test_kat_assertion_rebuilds_byte_for_byte(case: dict[str, Any]) -> None:
    from fido2.webauthn import AuthenticatorData, CollectedClientData

    flags = AuthenticatorData.FLAG
    ext = _ext_from_cbor(case["fields"]["extension_cbor_hex"])
    auth = AuthenticatorData.create(
        hashlib.sha256(KAT["rp_id"].encode()).digest(),
        flags.UP | flags.UV | flags.ED,
        case["fields"]["sign_count"],
        extensions=ext.to_extensions(),
    )
    client = CollectedClientData.create(
        type="webauthn.get", challenge=bytes.fromhex(case["challenge_hex"]), origin=KAT["origin"]
    )
    raw = case["bytes"]
    assert bytes(auth).hex() == raw["authenticator_data_hex"]
    assert bytes(client).decode() == raw["client_data_json"]
    assert (bytes(auth) + client.hash).hex() == raw["signed_message_hex"]
    signature = _CRED_KEY.sign(bytes(auth) + client.hash).signature
    assert signature.hex() == raw["signature_hex"]
    assert (
        protocol.authentication_to_json(
            credential_id=bytes.fromhex(KAT["credential_id_hex"]),
            client_data_json=bytes(client),
            authenticator_data=bytes(auth),
            signature=signature,
            user_handle=bytes.fromhex(KAT["user_handle_hex"]),
        )
        == case["credential"]
    )


def _kat_store(*, with_assertions: bool) -> SQLiteStore:
    store = SQLiteStore()
    reg = KAT["registration"]
    challenge = bytes.fromhex(reg["challenge_hex"])
    store.insert_challenge(challenge, KAT["user"], Purpose.REGISTER.value, 1e12)
    verify_registration(
        credential=reg["credential"],
        expected_challenge=challenge,
        expected_origin=KAT["origin"],
        expected_rp_id=KAT["rp_id"],
        store=store,
        user=KAT["user"],
        user_handle=bytes.fromhex(KAT["user_handle_hex"]),
    )
    if with_assertions:
        for case in KAT["assertions"]:
            _kat_assert(store, case)
    return store


def _kat_assert(store: SQLiteStore, case: dict[str, Any], policy: Any = None) -> Any:
    from verifier import Policy

    challenge = bytes.fromhex(case["challenge_hex"])
    store.insert_challenge(challenge, KAT["user"], Purpose.AUTHENTICATE.value, 1e12)
    return verify_assertion(
        credential=case["credential"],
        expected_challenge=challenge,
        expected_origin=KAT["origin"],
        expected_rp_id=KAT["rp_id"],
        store=store,
        policy=policy or Policy(),
    )


def test_kat_verifies_in_order_with_our_verifier() -> None:
    store = _kat_store(with_assertions=False)
    for case in KAT["assertions"]:
        result = _kat_assert(store, case)
        want = case["expect"]
        assert result.new_sign_count == want["new_sign_count"]
        assert result.method.value == want["method"]
        assert result.assurance.value == want["assurance"]
        assert result.liveness.passed is want["liveness_passed"]
        assert result.user_verified is want["user_verified"]


def test_kat_verifies_with_python_fido2() -> None:
    from fido2.server import Fido2Server
    from fido2.webauthn import PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity

    server = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=KAT["rp_id"]))
    user = PublicKeyCredentialUserEntity(id=bytes.fromhex(KAT["user_handle_hex"]), name="alice")
    _, state = server.register_begin(
        user, challenge=bytes.fromhex(KAT["registration"]["challenge_hex"])
    )
    data = server.register_complete(state, KAT["registration"]["credential"]).credential_data
    assert data is not None
    for case in KAT["assertions"]:
        _, state = server.authenticate_begin([data], challenge=bytes.fromhex(case["challenge_hex"]))
        server.authenticate_complete(state, [data], case["credential"])


def test_kat_verifies_with_py_webauthn() -> None:
    webauthn = pytest.importorskip("webauthn")
    reg = KAT["registration"]
    verified = webauthn.verify_registration_response(
        credential=json.dumps(reg["credential"]),
        expected_challenge=bytes.fromhex(reg["challenge_hex"]),
        expected_rp_id=KAT["rp_id"],
        expected_origin=KAT["origin"],
        require_user_verification=True,
    )
    assert verified.credential_id.hex() == KAT["credential_id_hex"]
    assert verified.aaguid.replace("-", "") == bytes(protocol.DEVICEBIO_AAGUID).hex()
    count = verified.sign_count
    for case in KAT["assertions"]:
        result = webauthn.verify_authentication_response(
            credential=json.dumps(case["credential"]),
            expected_challenge=bytes.fromhex(case["challenge_hex"]),
            expected_rp_id=KAT["rp_id"],
            expected_origin=KAT["origin"],
            credential_public_key=verified.credential_public_key,
            credential_current_sign_count=count,
            require_user_verification=True,
        )
        assert result.new_sign_count == case["expect"]["new_sign_count"]
        count = result.new_sign_count


_NEG_A = KAT["negative_assertions"]
_NEG_R = KAT["negative_registrations"]


@pytest.mark.parametrize("case", _NEG_A, ids=_ids(_NEG_A))
def test_kat_negative_assertions_give_their_reason(case: dict[str, Any]) -> None:
    from verifier import Policy

    store = _kat_store(with_assertions=True)
    policy = Policy(**case["policy"])
    with pytest.raises(VerifierError) as info:
        _kat_assert(store, case, policy)
    assert info.value.reason.value == case["expect_reason"]
    # A refused assertion never moves the stored counter.
    record = store.get_credential(bytes.fromhex(KAT["credential_id_hex"]))
    assert record is not None and record.sign_count == len(KAT["assertions"])


@pytest.mark.parametrize("case", _NEG_R, ids=_ids(_NEG_R))
def test_kat_negative_registrations_give_their_reason(case: dict[str, Any]) -> None:
    store = SQLiteStore()
    challenge = bytes.fromhex(case["challenge_hex"])
    store.insert_challenge(challenge, KAT["user"], Purpose.REGISTER.value, 1e12)
    with pytest.raises(VerifierError) as info:
        verify_registration(
            credential=case["credential"],
            expected_challenge=challenge,
            expected_origin=KAT["origin"],
            expected_rp_id=KAT["rp_id"],
            store=store,
            user=KAT["user"],
        )
    assert info.value.reason.value == case["expect_reason"]
    assert store.get_credential(bytes.fromhex(KAT["credential_id_hex"])) is None


# --------------------------------------------------------------------------- vectors meet


def test_revocation_list_refuses_the_credential_of_the_webauthn_v1_vector() -> None:
    """The list's credential_id entry is webauthn-v1.json's credential: its assertion, valid
    in every other way, is refused as REVOKED once the list is in force."""
    vec = json.loads((VECTORS / "webauthn-v1.json").read_text())
    now = REVOCATION["install_sequence"][0]["now"]
    store = SQLiteStore()
    # v1's face claims are unbound (refused since v2 of the rules), so its credential is put
    # on file directly and its PIN assertion is the one the list must refuse.
    reg = protocol.parse_registration_json(vec["registration"]["credential"])
    data = reg.attestation.auth_data.credential_data
    store.add_credential(
        CredentialRecord(
            reg.credential_id,
            vec["user"],
            b"",
            vec["rp_id"],
            cbor.encode(dict(data.public_key)),
            0,
            reg.extension.device_id,
            1.0,
        )
    )
    install_revocation_list(
        store, bytes.fromhex(REVOCATION["list"]["cose_sign1_hex"]), _ISSUER_PUB, now=now
    )
    case = next(c for c in vec["assertions"] if c["expect"]["method"] == "pin")
    challenge = bytes.fromhex(case["challenge_hex"])
    store.insert_challenge(challenge, vec["user"], Purpose.AUTHENTICATE.value, 1e12)
    with pytest.raises(VerifierError) as info:
        verify_assertion(
            credential=case["credential"],
            expected_challenge=challenge,
            expected_origin=vec["origin"],
            expected_rp_id=vec["rp_id"],
            store=store,
            revocation_issuer_key=_ISSUER_PUB,
            now=now,
        )
    assert info.value.reason is VReason.REVOKED


def test_revocation_list_refuses_the_kat_device() -> None:
    """The list's device_key entry is the KAT's per-RP device id."""
    assert KAT["device_id_hex"] in {
        e["value"] for e in REVOCATION["list"]["decoded"]["entries"] if e["kind"] == "device_key"
    }
    now = REVOCATION["install_sequence"][0]["now"]
    store = _kat_store(with_assertions=False)
    install_revocation_list(
        store, bytes.fromhex(REVOCATION["list"]["cose_sign1_hex"]), _ISSUER_PUB, now=now
    )
    case = KAT["assertions"][0]
    challenge = bytes.fromhex(case["challenge_hex"])
    store.insert_challenge(challenge, KAT["user"], Purpose.AUTHENTICATE.value, 1e12)
    with pytest.raises(VerifierError) as info:
        verify_assertion(
            credential=case["credential"],
            expected_challenge=challenge,
            expected_origin=KAT["origin"],
            expected_rp_id=KAT["rp_id"],
            store=store,
            revocation_issuer_key=_ISSUER_PUB,
            now=now,
        )
    assert info.value.reason is VReason.REVOKED


# -- payments (Secure Payment Confirmation), payment-v2.json ---------------------------------


def _payment_store() -> SQLiteStore:
    store = SQLiteStore()
    store.add_credential(
        CredentialRecord(
            credential_id=bytes.fromhex(PAYMENT["credential_id_hex"]),
            user=PAYMENT["user"],
            user_handle=b"",
            rp_id=PAYMENT["rp_id"],
            public_key=bytes.fromhex(PAYMENT["public_key_cose_hex"]),
            sign_count=0,
            device_id=None,
            created_at=0.0,
        )
    )
    return store


def _pay(store: SQLiteStore, case: dict[str, Any]) -> Any:
    from devicebio.protocol import PaymentDetails
    from verifier import PaymentPolicy, verify_payment

    challenge = bytes.fromhex(case["challenge_hex"])
    store.insert_challenge(challenge, PAYMENT["user"], Purpose.PAYMENT.value, 1e12)
    return verify_payment(
        credential=case["credential"],
        expected_challenge=challenge,
        expected_origin=PAYMENT["origin"],
        expected_rp_id=PAYMENT["rp_id"],
        expected_payment=PaymentDetails.from_json(case["expected_payment"]),
        store=store,
        payment_policy=PaymentPolicy(**case.get("payment_policy", PAYMENT["payment_policy"])),
        payment_id=case["name"],
        now=1_800_000_000.0,
    )


@pytest.mark.parametrize(
    "case", PAYMENT["accepted"] + PAYMENT["negatives"], ids=lambda c: c["name"]
)
def test_payment_assertion_rebuilds_byte_for_byte(case: dict[str, Any]) -> None:
    from devicebio.protocol import PaymentDetails, payment_client_data

    client = case["client_data_json"].encode()
    signed = json.loads(client)
    if signed["type"] == "payment.get":
        rebuilt = payment_client_data(
            challenge=bytes.fromhex(case["challenge_hex"]),
            origin=PAYMENT["origin"],
            payment=PaymentDetails.from_json(signed["payment"]),
        )
        assert rebuilt == client
    message = bytes.fromhex(case["authenticator_data_hex"]) + hashlib.sha256(client).digest()
    assert message.hex() == case["signed_message_hex"]
    key = nacl.signing.SigningKey(
        hashlib.sha256(PAYMENT["credential_key_seed_label"].encode()).digest()
    )
    assert key.sign(message).signature.hex() == case["signature_hex"]


def test_payment_vectors_verify_in_order() -> None:
    store = _payment_store()
    for case in PAYMENT["accepted"]:
        result = _pay(store, case)
        assert result.assertion.method.value == case["expect"]["method"]
        assert result.assertion.assurance.value == case["expect"]["assurance"]
        assert result.record.amount_micros == case["expect"]["amount_micros"]
    for case in PAYMENT["negatives"]:
        with pytest.raises(VerifierError) as info:
            _pay(store, case)
        assert info.value.reason.value == case["expect_reason"], case["name"]


@pytest.mark.parametrize("case", PAYMENT["malformed_members"], ids=lambda c: c["name"])
def test_payment_malformed_members_are_refused(case: dict[str, Any]) -> None:
    from devicebio.protocol import PaymentDetails, ProtocolReason

    with pytest.raises(ProtocolError) as info:
        PaymentDetails.from_json(case["member"])
    assert info.value.reason is ProtocolReason.MALFORMED_DATA


@pytest.mark.parametrize("case", PAYMENT["amounts"], ids=lambda c: c["value"])
def test_payment_amounts_convert_exactly(case: dict[str, Any]) -> None:
    from devicebio.protocol import Amount

    assert Amount("EUR", case["value"]).micros == case["micros"]


def test_kat_v2_is_retired_its_face_claims_hash_v1_plans() -> None:
    """webauthn-kat-v2.json stays to show what liveness plan v2 (issue 13) did to old claims:
    its bytes still parse, but its passed face registration hashes a v1 plan, so it is refused
    with liveness_mismatch whatever the policy."""
    assert KAT_V2["format_version"] == 2
    reg = KAT_V2["registration"]
    challenge = bytes.fromhex(reg["challenge_hex"])
    store = SQLiteStore()
    store.insert_challenge(challenge, KAT_V2["user"], Purpose.REGISTER.value, 1e12)
    with pytest.raises(VerifierError) as err:
        verify_registration(
            credential=reg["credential"],
            expected_challenge=challenge,
            expected_origin=KAT_V2["origin"],
            expected_rp_id=KAT_V2["rp_id"],
            store=store,
            user=KAT_V2["user"],
            user_handle=bytes.fromhex(KAT_V2["user_handle_hex"]),
        )
    assert err.value.reason is VReason.LIVENESS_MISMATCH
