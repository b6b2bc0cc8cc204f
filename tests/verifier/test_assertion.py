"""verify_assertion: the happy paths, every byte flipped, and each refusal with its reason.

Forged-but-validly-signed assertions are re-signed with the real credential key read back
from the device's vault, so each negative test proves the check it names.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from fido2.webauthn import AuthenticatorData, CollectedClientData
from helpers.claims import MODEL, live_claim
from helpers.claims import face as helpers_face

from devicebio import protocol
from devicebio.hazmat.credentials import KIND, Credentials, UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store.vault import RawKey, Vault
from verifier import (
    Assurance,
    EntryKind,
    Policy,
    Purpose,
    Reason,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    SQLiteStore,
    VerifiedAssertion,
    VerifierError,
    install_revocation_list,
    issue_challenge,
    sign_revocation_list,
    verify_assertion,
    verify_registration,
)
from verifier.store import CredentialRecord

RP = "example.com"
ORIGIN = "https://example.com"
F = AuthenticatorData.FLAG
# FACE stands for "a verified face with passed liveness for the challenge in use": the
# verifier checks a passed claim against its challenge, so Device builds one per challenge.
FACE = helpers_face(b"\x00" * 32)
FACE_NO_LIVENESS = UserVerification(Method.FACE, LivenessClaim.none(), MODEL, True)
PIN = UserVerification(Method.PIN, LivenessClaim.none(), None, True)
RECOVERY = UserVerification(Method.RECOVERY, LivenessClaim.none(), None, True)
SECURITY_KEY = UserVerification(Method.SECURITY_KEY, LivenessClaim.none(), None, True)
FAILED = UserVerification(
    Method.FACE, LivenessClaim("active-challenge", False, None, 30), MODEL, False
)
ISSUER = nacl.signing.SigningKey(b"\x44" * 32)


class Device:
    """A registered device and its relying party, wired with the real parts."""

    def __init__(self, path: Path) -> None:
        self.vault = Vault.create(path, RawKey(b"\x33" * 32))
        self.creds = Credentials(self.vault)
        self.store = SQLiteStore()
        ch = issue_challenge(self.store, user="alice", purpose=Purpose.REGISTER)
        self.reg = self.creds.register(
            rp_id=RP,
            origin=ORIGIN,
            challenge=ch.value,
            user_name="alice",
            verification=helpers_face(ch.value),
        )
        verify_registration(
            credential=self.reg.to_json(),
            expected_challenge=ch.value,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=self.store,
            user="alice",
            user_handle=self.reg.user_handle,
        )

    def challenge(self, **kw: Any) -> bytes:
        kw.setdefault("user", "alice")
        kw.setdefault("purpose", Purpose.AUTHENTICATE)
        return issue_challenge(self.store, **kw).value

    def assert_(self, challenge: bytes, verification: UserVerification = FACE, **kw: Any):
        args: dict[str, Any] = {"rp_id": RP, "origin": ORIGIN}
        args.update(kw)
        if verification is FACE:
            verification = helpers_face(challenge)
        return self.creds.authenticate(challenge=challenge, verification=verification, **args)

    def verify(self, credential: Any, challenge: bytes, **kw: Any):
        args: dict[str, Any] = {
            "credential": credential,
            "expected_challenge": challenge,
            "expected_origin": ORIGIN,
            "expected_rp_id": RP,
            "store": self.store,
        }
        args.update(kw)
        return verify_assertion(**args)

    def refused(self, reason: Reason, credential: Any, challenge: bytes, **kw: Any):
        with pytest.raises(VerifierError) as info:
            self.verify(credential, challenge, **kw)
        assert info.value.reason is reason, info.value
        return info.value

    def signing_key(self) -> nacl.signing.SigningKey:
        (rid,) = self.vault.ids(KIND)
        return nacl.signing.SigningKey(self.vault.get(KIND, rid)["seed"])

    def forge(
        self,
        challenge: bytes,
        *,
        flags: int = F.UP | F.UV | F.ED,
        counter: int = 1,
        extensions: Any = "default",
        origin: str = ORIGIN,
        client_type: str = "webauthn.get",
        user_handle: bytes | None = None,
    ) -> dict[str, Any]:
        """An assertion validly signed by this device's key, with one thing changed."""
        if extensions == "default":
            extensions = helpers_face(challenge).extension().to_extensions()
        ad = AuthenticatorData.create(
            hashlib.sha256(RP.encode()).digest(), F(flags), counter, extensions=extensions
        )
        cd = CollectedClientData.create(type=client_type, challenge=challenge, origin=origin)
        sig = self.signing_key().sign(bytes(ad) + cd.hash).signature
        return protocol.authentication_to_json(
            credential_id=self.reg.credential_id,
            client_data_json=bytes(cd),
            authenticator_data=bytes(ad),
            signature=sig,
            user_handle=user_handle or self.reg.user_handle,
        )


@pytest.fixture
def dev(tmp_path: Path) -> Device:
    return Device(tmp_path / "vault")


# ---------------------------------------------------------------- happy paths


def test_assertion_verifies_and_counter_is_stored(dev):
    for expected in (1, 2, 3):
        ch = dev.challenge()
        result = dev.verify(dev.assert_(ch).to_json(), ch)
        assert result.new_sign_count == expected
        assert dev.store.get_credential(dev.reg.credential_id).sign_count == expected
    assert result.credential_id == dev.reg.credential_id and result.user == "alice"
    assert result.method is Method.FACE and result.assurance is Assurance.MODERATE
    assert result.liveness == live_claim(ch) and result.model == MODEL and result.user_verified
    assert not result.re_enrol_required
    assert [e for _, e, _ in dev.store.audit_events()].count("assertion_verified") == 3


@pytest.mark.parametrize(
    ("verification", "assurance"),
    [
        (FACE, Assurance.MODERATE),  # active-only liveness: moderate by default (issue 13)
        (FACE_NO_LIVENESS, Assurance.MODERATE),
        (PIN, Assurance.WEAKER),
        (SECURITY_KEY, Assurance.STRONG),
        (RECOVERY, Assurance.RECOVERY),
    ],
)
def test_assurance_per_method(dev, verification, assurance):
    ch = dev.challenge()
    result = dev.verify(dev.assert_(ch, verification).to_json(), ch)
    assert result.method is verification.method and result.assurance is assurance
    assert result.re_enrol_required is (assurance is Assurance.RECOVERY)


def test_policy_can_revalue_methods(dev):
    ch = dev.challenge()
    policy = Policy(pin=Assurance.MODERATE)
    assert dev.verify(dev.assert_(ch, PIN).to_json(), ch, policy=policy).assurance is (
        Assurance.MODERATE
    )


# ---------------------------------------------------------------- every byte flipped


def _region_expectations(assertion: Any) -> list[tuple[str, int, int, set[Reason]]]:
    """(field, position, xor mask, reasons a flip there may legitimately produce)."""
    ad = assertion.authenticator_data
    out: list[tuple[str, int, int, set[Reason]]] = []
    for i in range(len(ad)):
        if i < 32:
            out.append(("authenticator_data", i, 0x01, {Reason.RP_ID_MISMATCH}))
        elif i == 32:
            per_bit = {
                0x01: Reason.USER_NOT_PRESENT,
                0x02: Reason.BAD_SIGNATURE,  # reserved bit: only the signature notices
                0x04: Reason.USER_NOT_VERIFIED,
                0x08: Reason.BACKUP_FLAGS_INCONSISTENT,
                0x10: Reason.BACKUP_FLAGS_INCONSISTENT,
                0x20: Reason.BAD_SIGNATURE,
                0x40: Reason.MALFORMED,  # AT: the extension map cannot parse as credential data
                0x80: Reason.MALFORMED,  # ED cleared: trailing bytes
            }
            out.extend(("authenticator_data", i, m, {r}) for m, r in per_bit.items())
        elif i < 37:
            out.append(("authenticator_data", i, 0x01, {Reason.BAD_SIGNATURE}))
        else:
            reasons = {
                Reason.MALFORMED,
                Reason.EXTENSION_MISSING,
                Reason.EXTENSION_INVALID,
                Reason.BAD_SIGNATURE,
            }
            out.append(("authenticator_data", i, 0x01, reasons))
    for i in range(len(assertion.client_data_json)):
        reasons = {
            Reason.MALFORMED,
            Reason.WRONG_TYPE,
            Reason.CHALLENGE_MISMATCH,
            Reason.ORIGIN_MISMATCH,
            Reason.BAD_SIGNATURE,
        }
        out.append(("client_data_json", i, 0x01, reasons))
    for i in range(len(assertion.signature)):
        out.append(("signature", i, 0x01, {Reason.BAD_SIGNATURE}))
    return out


def test_every_flipped_byte_is_refused_with_its_reason(dev):
    ch = dev.challenge()
    good = dev.assert_(ch)
    record = dev.store.get_credential(dev.reg.credential_id)
    seen: dict[str, set[Reason]] = {}
    cases = _region_expectations(good)
    assert len(cases) > 300
    for field, pos, mask, allowed in cases:
        fields = {
            "authenticator_data": bytearray(good.authenticator_data),
            "client_data_json": bytearray(good.client_data_json),
            "signature": bytearray(good.signature),
        }
        fields[field][pos] ^= mask
        forged = protocol.authentication_to_json(
            credential_id=good.credential_id,
            client_data_json=bytes(fields["client_data_json"]),
            authenticator_data=bytes(fields["authenticator_data"]),
            signature=bytes(fields["signature"]),
            user_handle=good.user_handle,
        )
        # A fresh verifier per case: the credential as registered, the challenge unused.
        store = SQLiteStore()
        store.add_credential(record)
        store.insert_challenge(ch, "alice", Purpose.AUTHENTICATE.value, 1e12)
        with pytest.raises(VerifierError) as info:
            verify_assertion(
                credential=forged,
                expected_challenge=ch,
                expected_origin=ORIGIN,
                expected_rp_id=RP,
                store=store,
            )
        assert info.value.reason in allowed, (field, pos, mask, info.value)
        seen.setdefault(field, set()).add(info.value.reason)
        assert store.get_credential(record.credential_id).sign_count == record.sign_count
    # The sample really exercised the distinct checks, not one catch-all.
    assert {Reason.MALFORMED, Reason.CHALLENGE_MISMATCH, Reason.BAD_SIGNATURE} <= seen[
        "client_data_json"
    ]
    assert {Reason.RP_ID_MISMATCH, Reason.USER_NOT_PRESENT, Reason.BAD_SIGNATURE} <= seen[
        "authenticator_data"
    ]
    # The unflipped assertion still verifies on a fresh verifier.
    store = SQLiteStore()
    store.add_credential(record)
    store.insert_challenge(ch, "alice", Purpose.AUTHENTICATE.value, 1e12)
    assert (
        verify_assertion(
            credential=good.to_json(),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
        ).new_sign_count
        == 1
    )


# ---------------------------------------------------------------- challenge


def test_wrong_challenge(dev):
    ch = dev.challenge()
    dev.refused(Reason.CHALLENGE_MISMATCH, dev.assert_(b"\x09" * 32).to_json(), ch)


def test_reused_challenge(dev):
    ch = dev.challenge()
    a = dev.assert_(ch)
    dev.verify(a.to_json(), ch)
    dev.refused(Reason.CHALLENGE_REUSED, a.to_json(), ch)
    dev.refused(Reason.CHALLENGE_REUSED, dev.assert_(ch).to_json(), ch)


def test_expired_challenge(dev):
    ch = dev.challenge(ttl=30, now=5000.0)
    dev.refused(Reason.CHALLENGE_EXPIRED, dev.assert_(ch).to_json(), ch, now=5031.0)


def test_challenge_within_ttl_passes_with_injected_time(dev):
    ch = dev.challenge(ttl=30, now=5000.0)
    assert dev.verify(dev.assert_(ch).to_json(), ch, now=5029.0).new_sign_count == 1


def test_challenge_for_registration_or_another_user(dev):
    ch = dev.challenge(purpose=Purpose.REGISTER)
    dev.refused(Reason.CHALLENGE_WRONG_PURPOSE, dev.assert_(ch).to_json(), ch)
    ch = dev.challenge(user="bob")
    dev.refused(Reason.CHALLENGE_WRONG_USER, dev.assert_(ch).to_json(), ch)


def test_unknown_challenge(dev):
    ch = b"\x05" * 32
    dev.refused(Reason.CHALLENGE_UNKNOWN, dev.assert_(ch).to_json(), ch)


def test_failed_attempt_still_burns_the_challenge(dev):
    ch = dev.challenge()
    dev.refused(
        Reason.ORIGIN_MISMATCH,
        dev.assert_(ch).to_json(),
        ch,
        expected_origin="https://other.example.com",
    )
    dev.refused(Reason.CHALLENGE_REUSED, dev.assert_(ch).to_json(), ch)


def test_unparsable_response_burns_the_challenge_and_a_bad_challenge_is_named_first(dev):
    # The response is parsed before the challenge is burnt (so that a good one's burn and
    # credential read share one statement); the outcome must be as if the burn came first.
    ch = dev.challenge()
    dev.refused(Reason.MALFORMED, "{not json", ch)
    dev.refused(Reason.CHALLENGE_REUSED, dev.assert_(ch).to_json(), ch)
    dev.refused(Reason.CHALLENGE_REUSED, "{not json", ch)
    dev.refused(Reason.CHALLENGE_UNKNOWN, "{not json", b"\x05" * 32)
    ch = dev.challenge(purpose=Purpose.REGISTER)
    dev.refused(Reason.CHALLENGE_WRONG_PURPOSE, "{not json", ch)


def test_damaged_credential_row_is_a_storage_refusal_that_burns_the_challenge(dev):
    # A hand-edited or damaged row is an integrity error, typed and audited, whatever the
    # challenge: never a stray ValueError, never an acceptance.
    dev.store._conn.execute("UPDATE credentials SET created_at = 'x'")
    fresh = dev.challenge()
    for ch in (fresh, b"\x05" * 32):
        dev.refused(Reason.STORAGE, dev.assert_(ch).to_json(), ch)
    assert dev.store.use_challenge(fresh)[3] is True  # burnt by the refused attempt
    events = [e for e in dev.store.audit_events(10) if e[1] == "assertion_refused"]
    assert [e[2]["reason"] for e in events][-2:] == ["storage", "storage"]


def test_unknown_credential_burns_the_challenge(dev):
    ch = dev.challenge()
    other = dev.assert_(ch).to_json()
    other["id"] = other["rawId"] = "AAAAAAAAAAAAAAAAAAAAAA"
    dev.refused(Reason.CREDENTIAL_UNKNOWN, other, ch)
    dev.refused(Reason.CHALLENGE_REUSED, dev.assert_(ch).to_json(), ch)


# ---------------------------------------------------------------- origin, rp id, type


def test_wrong_origin(dev):
    ch = dev.challenge()
    a = dev.assert_(ch, origin="https://login.example.com")
    dev.refused(Reason.ORIGIN_MISMATCH, a.to_json(), ch)


def test_wrong_rp_id(dev):
    ch = dev.challenge()
    dev.refused(Reason.RP_ID_MISMATCH, dev.assert_(ch).to_json(), ch, expected_rp_id="other.org")


def test_credential_registered_for_another_rp(dev):
    record = dev.store.get_credential(dev.reg.credential_id)
    store = SQLiteStore()
    store.add_credential(
        CredentialRecord(**{**record.__dict__, "rp_id": "other.org"})  # same key, other RP
    )
    ch = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE).value
    with pytest.raises(VerifierError) as info:
        verify_assertion(
            credential=dev.assert_(ch).to_json(),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
        )
    assert info.value.reason is Reason.RP_ID_MISMATCH


def test_wrong_types(dev):
    ch = dev.challenge()
    j = dev.assert_(ch).to_json()
    dev.refused(Reason.WRONG_TYPE, {**j, "type": "public-key2"}, ch)
    ch = dev.challenge()
    dev.refused(Reason.WRONG_TYPE, dev.forge(ch, client_type="webauthn.create"), ch)


# ---------------------------------------------------------------- flags


def test_unverified_attempt_is_refused(dev):
    ch = dev.challenge()
    dev.refused(Reason.USER_NOT_PRESENT, dev.assert_(ch, FAILED).to_json(), ch)


def test_uv_missing_when_required(dev):
    ch = dev.challenge()
    dev.refused(Reason.USER_NOT_VERIFIED, dev.forge(ch, flags=F.UP | F.ED), ch)


def test_uv_waived_by_policy_earns_no_assurance(dev):
    ch = dev.challenge()
    result = dev.verify(
        dev.forge(ch, flags=F.UP | F.ED), ch, policy=Policy(require_user_verification=False)
    )
    assert not result.user_verified and result.assurance is Assurance.NONE


@pytest.mark.parametrize("extra", [F.BE, F.BS, F.BE | F.BS])
def test_backup_flags(dev, extra):
    ch = dev.challenge()
    dev.refused(
        Reason.BACKUP_FLAGS_INCONSISTENT, dev.forge(ch, flags=F.UP | F.UV | F.ED | extra), ch
    )


# ---------------------------------------------------------------- counter


def test_counter_regression(dev):
    ch1, ch2, ch3 = dev.challenge(), dev.challenge(), dev.challenge()
    first = dev.assert_(ch1)
    second = dev.assert_(ch2)
    dev.verify(second.to_json(), ch2)
    dev.refused(Reason.COUNTER_REGRESSION, first.to_json(), ch1)
    # An equal counter is a regression too (a cloned key replaying the next value).
    dev.refused(Reason.COUNTER_REGRESSION, dev.forge(ch3, counter=2), ch3)
    assert dev.store.get_credential(dev.reg.credential_id).sign_count == 2


def test_zero_counters_are_allowed_only_while_both_are_zero(dev):
    ch = dev.challenge()
    assert dev.verify(dev.forge(ch, counter=0), ch).new_sign_count == 0
    ch = dev.challenge()
    dev.verify(dev.forge(ch, counter=7), ch)
    ch = dev.challenge()
    dev.refused(Reason.COUNTER_REGRESSION, dev.forge(ch, counter=0), ch)


class _RacingStore(SQLiteStore):
    """A real store in which another verifier process bumps the counter between this
    verifier's read and its compare-and-set."""

    def use_challenge_and_get_credential(self, value: bytes, credential_id: bytes):
        found, record = super().use_challenge_and_get_credential(value, credential_id)
        if record is not None:
            self.update_sign_count(credential_id, record.sign_count, record.sign_count + 1)
        return found, record


def test_counter_compare_and_set_loses_to_a_concurrent_verifier(dev):
    record = dev.store.get_credential(dev.reg.credential_id)
    store = _RacingStore()
    store.add_credential(record)
    ch = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE).value
    with pytest.raises(VerifierError) as info:
        verify_assertion(
            credential=dev.assert_(ch).to_json(),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
        )
    assert info.value.reason is Reason.COUNTER_REGRESSION


def _race(store_for: Any, attempts: list[tuple[dict[str, Any], bytes]]) -> list[object]:
    """Verify each (assertion JSON, challenge) on its own thread and store (its own verifier
    process, in effect), all at once; returns each outcome or refusal reason."""
    outcomes: list[object] = [None] * len(attempts)
    barrier = threading.Barrier(len(attempts))

    def run(i: int) -> None:
        local = store_for(i)
        j, ch = attempts[i]
        barrier.wait()
        try:
            outcomes[i] = verify_assertion(
                credential=j,
                expected_challenge=ch,
                expected_origin=ORIGIN,
                expected_rp_id=RP,
                store=local,
            )
        except VerifierError as exc:
            outcomes[i] = exc.reason

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_verifications_of_one_counter_value_accept_exactly_one(backend, dev):
    store = backend.open()
    store.add_credential(dev.store.get_credential(dev.reg.credential_id))
    # Two challenges, one counter value: a cloned key racing the genuine one.
    ch1 = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE).value
    ch2 = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE).value
    attempts = [(dev.forge(ch1, counter=5), ch1), (dev.forge(ch2, counter=5), ch2)]
    outcomes = _race(lambda i: backend.open(), attempts)
    assert outcomes.count(Reason.COUNTER_REGRESSION) == 1
    assert sum(isinstance(o, VerifiedAssertion) for o in outcomes) == 1
    assert store.get_credential(dev.reg.credential_id).sign_count == 5


def test_one_assertion_raced_by_many_verifiers_is_accepted_once(backend, dev):
    store = backend.open()
    store.add_credential(dev.store.get_credential(dev.reg.credential_id))
    ch = issue_challenge(store, user="alice", purpose=Purpose.AUTHENTICATE).value
    captured = dev.assert_(ch).to_json()
    stores = [backend.open() for _ in range(6)]
    outcomes = _race(lambda i: stores[i], [(captured, ch)] * len(stores))
    assert sum(isinstance(o, VerifiedAssertion) for o in outcomes) == 1
    assert outcomes.count(Reason.CHALLENGE_REUSED) == len(stores) - 1
    events = [e[1] for e in store.audit_events()]
    assert events.count("assertion_verified") == 1
    assert events.count("assertion_refused") == len(stores) - 1


# ---------------------------------------------------------------- revocation


def _install(
    store: SQLiteStore,
    *entries: RevocationEntry,
    serial: int = 1,
    this_update: int = 1000,
    next_update: int = 10**10,
) -> bytes:
    rl = RevocationList(
        issuer="rp-security",
        serial=serial,
        this_update=this_update,
        next_update=next_update,
        entries=tuple(entries),
    )
    data = sign_revocation_list(rl, ISSUER)
    install_revocation_list(store, data, ISSUER.verify_key, now=this_update)
    return data


def _entry(kind: EntryKind, value: bytes | str) -> RevocationEntry:
    return RevocationEntry(kind, value, RevocationReason.USER_KEY_PHYSICAL_COMPROMISE, 1000)


def test_not_revoked_passes(dev):
    _install(dev.store, _entry(EntryKind.CREDENTIAL_ID, b"\x00" * 32))
    ch = dev.challenge()
    assert dev.verify(dev.assert_(ch).to_json(), ch, revocation_issuer_key=ISSUER.verify_key)


@pytest.mark.parametrize("which", ["credential", "device", "model"])
def test_revoked(dev, which):
    value = {
        "credential": (EntryKind.CREDENTIAL_ID, dev.reg.credential_id),
        "device": (EntryKind.DEVICE_KEY, dev.reg.device_id),
        "model": (EntryKind.MODEL_ID, MODEL),
    }[which]
    _install(dev.store, _entry(*value))
    ch = dev.challenge()
    dev.refused(
        Reason.REVOKED, dev.assert_(ch).to_json(), ch, revocation_issuer_key=ISSUER.verify_key
    )
    # Without the issuer key the caller has opted out of revocation checking.
    ch = dev.challenge()
    assert dev.verify(dev.assert_(ch).to_json(), ch)


def test_revoked_sdk_version(dev):
    ch = dev.challenge()
    a = dev.assert_(ch)
    ext = protocol.devicebio_extension_of(AuthenticatorData(a.authenticator_data))
    assert ext is not None and ext.sdk_version
    _install(dev.store, _entry(EntryKind.SDK_VERSION, ext.sdk_version))
    dev.refused(Reason.REVOKED, a.to_json(), ch, revocation_issuer_key=ISSUER.verify_key)


def test_revoked_assertion_does_not_move_the_counter(dev):
    _install(dev.store, _entry(EntryKind.CREDENTIAL_ID, dev.reg.credential_id))
    ch = dev.challenge()
    dev.refused(
        Reason.REVOKED, dev.assert_(ch).to_json(), ch, revocation_issuer_key=ISSUER.verify_key
    )
    assert dev.store.get_credential(dev.reg.credential_id).sign_count == 0


def test_stale_revocation_list(dev):
    _install(dev.store, next_update=2000)
    ch = dev.challenge(now=1500.0, ttl=10**6)
    assert dev.verify(
        dev.assert_(ch).to_json(), ch, revocation_issuer_key=ISSUER.verify_key, now=1999.0
    )
    ch = dev.challenge(now=1500.0, ttl=10**6)
    dev.refused(
        Reason.REVOCATION_LIST_STALE,
        dev.assert_(ch).to_json(),
        ch,
        revocation_issuer_key=ISSUER.verify_key,
        now=2001.0,
    )


def test_missing_revocation_list(dev):
    ch = dev.challenge()
    dev.refused(
        Reason.REVOCATION_LIST_MISSING,
        dev.assert_(ch).to_json(),
        ch,
        revocation_issuer_key=ISSUER.verify_key,
    )


def test_rolled_back_revocation_list_cannot_unrevoke(dev):
    _install(dev.store, serial=1)  # revokes nothing
    _install(dev.store, _entry(EntryKind.CREDENTIAL_ID, dev.reg.credential_id), serial=2)
    # An attacker replays the older, validly signed list that did not name the credential.
    old = sign_revocation_list(RevocationList("rp-security", 1, 1000, 10**10, ()), ISSUER)
    with pytest.raises(VerifierError) as info:
        install_revocation_list(dev.store, old, ISSUER.verify_key, now=1000)
    assert info.value.reason is Reason.REVOCATION_LIST_ROLLBACK
    ch = dev.challenge()
    dev.refused(
        Reason.REVOKED, dev.assert_(ch).to_json(), ch, revocation_issuer_key=ISSUER.verify_key
    )


def test_revocation_list_from_another_issuer_is_refused(dev):
    _install(dev.store)
    ch = dev.challenge()
    other = nacl.signing.SigningKey(b"\x55" * 32).verify_key
    with pytest.raises(VerifierError) as info:
        dev.verify(dev.assert_(ch).to_json(), ch, revocation_issuer_key=other)
    assert info.value.reason is Reason.REVOCATION_LIST_BAD_SIGNATURE


# ---------------------------------------------------------------- credential, extension, policy


def test_unknown_credential(dev):
    ch = dev.challenge()
    j = dev.assert_(ch).to_json()
    other = protocol.b64url_encode(b"\x01" * 32)
    dev.refused(Reason.CREDENTIAL_UNKNOWN, {**j, "id": other, "rawId": other}, ch)


def test_user_handle_of_another_user(dev):
    ch = dev.challenge()
    dev.refused(Reason.CREDENTIAL_UNKNOWN, dev.forge(ch, user_handle=b"someone-else"), ch)


def test_extension_missing(dev):
    ch = dev.challenge()
    dev.refused(Reason.EXTENSION_MISSING, dev.forge(ch, flags=F.UP | F.UV, extensions=None), ch)
    ch = dev.challenge()
    dev.refused(Reason.EXTENSION_MISSING, dev.forge(ch, extensions={"credProtect": 1}), ch)


def test_extension_invalid(dev):
    ch = dev.challenge()
    obj = helpers_face(ch).extension().to_cbor_obj()
    obj["score"] = 93  # never a score on the wire
    dev.refused(Reason.EXTENSION_INVALID, dev.forge(ch, extensions={"devicebio": obj}), ch)
    ch = dev.challenge()
    with_device_id = helpers_face(ch).extension(device_id=dev.reg.device_id).to_extensions()
    dev.refused(Reason.EXTENSION_INVALID, dev.forge(ch, extensions=with_device_id), ch)
    ch = dev.challenge()
    unsolicited = {**helpers_face(ch).extension().to_extensions(), "hmac-secret": True}
    dev.refused(Reason.EXTENSION_INVALID, dev.forge(ch, extensions=unsolicited), ch)


def test_policy_refusing_a_method(dev):
    only_face = Policy(accepted_methods=frozenset({Method.FACE}))
    ch = dev.challenge()
    dev.refused(Reason.POLICY_METHOD_REFUSED, dev.assert_(ch, PIN).to_json(), ch, policy=only_face)
    ch = dev.challenge()
    assert dev.verify(dev.assert_(ch).to_json(), ch, policy=only_face).method is Method.FACE


def test_policy_requiring_liveness(dev):
    policy = Policy(require_liveness=True)
    ch = dev.challenge()
    dev.refused(
        Reason.POLICY_LIVENESS_REQUIRED,
        dev.assert_(ch, FACE_NO_LIVENESS).to_json(),
        ch,
        policy=policy,
    )
    ch = dev.challenge()
    assert dev.verify(dev.assert_(ch, PIN).to_json(), ch, policy=policy).method is Method.PIN


def test_policy_refusal_does_not_move_the_counter(dev):
    ch = dev.challenge()
    dev.refused(
        Reason.POLICY_METHOD_REFUSED,
        dev.assert_(ch, PIN).to_json(),
        ch,
        policy=Policy(accepted_methods=frozenset({Method.FACE})),
    )
    assert dev.store.get_credential(dev.reg.credential_id).sign_count == 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda j: b"\xff\xfe",
        lambda j: {**j, "response": {**j["response"], "signature": ""}},
        lambda j: {**j, "response": {**j["response"], "authenticatorData": "AAAA"}},
        lambda j: {**j, "response": {**j["response"], "userHandle": 5}},
        lambda j: {k: v for k, v in j.items() if k != "response"},
    ],
)
def test_malformed(dev, mutate):
    ch = dev.challenge()
    dev.refused(Reason.MALFORMED, mutate(dev.assert_(ch).to_json()), ch)


def test_refusals_are_audited(dev):
    ch = dev.challenge()
    dev.refused(Reason.RP_ID_MISMATCH, dev.assert_(ch).to_json(), ch, expected_rp_id="other.org")
    refused = [f for _, e, f in dev.store.audit_events() if e == "assertion_refused"]
    assert refused[-1]["reason"] == "rp_id_mismatch"
    assert refused[-1]["credential_id"] == dev.reg.credential_id.hex()
