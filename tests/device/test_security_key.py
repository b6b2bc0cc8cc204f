"""The FIDO2 security-key fallback, through python-fido2's real client and server halves.

The only stand-in is the USB key itself: ``soft_ctap2.SoftCtap2Key``, a software CTAP2
authenticator test double (see its docstring). Everything between it and devicebio —
Fido2Client, Ctap2 with its canonical-CBOR checks, Fido2Server, the vault, the verifier — is
the real code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy", reason="the device tests need the [device] extra (numpy)")

from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction  # noqa: E402
from soft_ctap2 import SoftCtap2Key  # noqa: E402

from devicebio.authenticator import Authenticator  # noqa: E402
from devicebio.errors import DeviceBioError, Reason  # noqa: E402
from devicebio.fallback import AttemptPolicy, Fallback, Pin  # noqa: E402
from devicebio.fallback.security_key import KIND, RP_ID, SecurityKeyFallback, find_security_keys  # noqa: E402
from devicebio.hazmat.credentials import UserVerification  # noqa: E402
from devicebio.outcome import OutcomeCode  # noqa: E402
from devicebio.protocol import LivenessClaim, Method  # noqa: E402
from devicebio.store.vault import RawKey, Vault  # noqa: E402

# Dedicated reasons are proposed for devicebio.errors; until they land the module uses the
# nearest existing ones, and so do these tests.
NOT_ENROLLED = Reason.SECURITY_KEY_NOT_ENROLLED
REJECTED = Reason.SECURITY_KEY_REJECTED
NOT_TOUCHED = Reason.SECURITY_KEY_NOT_TOUCHED
UNAVAILABLE = Reason.SECURITY_KEY_UNAVAILABLE

RP, ORIGIN = "bank.example", "https://bank.example"


@pytest.fixture()
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "vault", RawKey(b"\x07" * 32))


@pytest.fixture()
def fallback(vault: Vault) -> SecurityKeyFallback:
    return SecurityKeyFallback(vault)


def refused(reason: Reason, func, *args, **kwargs) -> DeviceBioError:
    with pytest.raises(DeviceBioError) as info:
        func(*args, **kwargs)
    assert info.value.reason is reason, info.value
    return info.value


def stored(vault: Vault) -> dict:
    (rid,) = vault.ids(KIND)
    return vault.get(KIND, rid)


# ---- the happy paths ------------------------------------------------------------------------


def test_enrol_and_verify_through_a_fido2_client(
    fallback: SecurityKeyFallback, vault: Vault
) -> None:
    key = SoftCtap2Key(algorithms=(-7,), attestation="packed")
    client = Fido2Client(key, DefaultClientDataCollector(fallback.origin))
    info = fallback.enroll_key(client, label="blue key")
    assert (info.label, info.algorithm, info.attestation) == ("blue key", -7, "packed")
    assert info.sign_count == key.sign_count and info.last_used_at is None
    assert key.touches == 1

    verification = fallback.verify(client)
    assert verification == UserVerification(
        method=Method.SECURITY_KEY, liveness=LivenessClaim.none(), model=None, verified=True
    )
    assert key.touches == 2
    [after] = fallback.keys()
    assert after.sign_count == key.sign_count > info.sign_count
    assert after.last_used_at is not None and after.user_verified is False
    # Public data only: the private key stays wrapped inside the security key.
    assert set(stored(vault)) == {
        "v", "label", "credential_id", "public_key", "aaguid", "fmt", "counter", "uv",
        "created_at", "last_used_at",
    }  # fmt: skip


def test_eddsa_key_with_none_attestation_and_uv(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key(algorithms=(-8,), attestation="none", uv=True)
    info = fallback.enroll_key(key, label="fingerprint key")  # a bare CtapDevice works too
    assert (info.algorithm, info.attestation, info.user_verified) == (-8, "none", True)
    assert fallback.verify(key).method is Method.SECURITY_KEY
    assert fallback.keys()[0].user_verified is True


def test_origin_is_per_vault_under_the_local_rp_id(tmp_path: Path, vault: Vault, fallback) -> None:
    other = SecurityKeyFallback(Vault.create(tmp_path / "other", RawKey(b"\x08" * 32)))
    assert fallback.origin.endswith("." + RP_ID) and fallback.origin.startswith("https://")
    assert fallback.origin != other.origin
    assert fallback.origin == SecurityKeyFallback(vault).origin  # stable for one vault


def test_several_keys_either_one_verifies(fallback: SecurityKeyFallback) -> None:
    blue, green = SoftCtap2Key(), SoftCtap2Key(algorithms=(-8,))
    fallback.enroll_key(blue, label="blue")
    fallback.enroll_key(green, label="green")
    enrolled = fallback.keys()
    assert [k.label for k in enrolled] == ["blue", "green"]
    assert fallback.verify(green).verified and fallback.verify(blue).verified


def test_counterless_key_is_accepted_while_both_counters_are_zero(fallback) -> None:
    key = SoftCtap2Key(counter=False)
    assert fallback.enroll_key(key, label="no counter").sign_count == 0
    fallback.verify(key)
    fallback.verify(key)
    assert fallback.keys()[0].sign_count == 0


# ---- refusals -------------------------------------------------------------------------------


def test_nothing_enrolled_is_refused_without_asking_the_key(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    refused(NOT_ENROLLED, fallback.verify, key)
    assert key.touches == 0


def test_an_unenrolled_key_is_refused(fallback: SecurityKeyFallback) -> None:
    mine, stranger = SoftCtap2Key(), SoftCtap2Key()
    fallback.enroll_key(mine, label="mine")
    before = fallback.keys()[0].sign_count
    error = refused(NOT_ENROLLED, fallback.verify, stranger)
    assert "not enrolled" in str(error)
    assert stranger.touches == 1  # the key asked for presence before saying "not mine"
    assert fallback.keys()[0].sign_count == before
    assert fallback.verify(mine).verified


def test_a_cloned_key_replaying_an_old_counter_is_refused(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="original")
    clone = key.clone()  # secrets and counter copied now
    fallback.verify(key)
    fallback.verify(key)
    counter = fallback.keys()[0].sign_count
    error = refused(REJECTED, fallback.verify, clone)
    assert "cloned" in str(error)
    assert fallback.keys()[0].sign_count == counter  # a refused answer moves nothing
    assert fallback.verify(key).verified


def test_a_counter_equal_to_the_last_one_is_refused(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    fallback.verify(key)
    last = fallback.keys()[0].sign_count
    # The client's silent pre-flight probe uses one value, the real assertion the next: rewind
    # so that the real assertion repeats exactly the last accepted counter.
    key.sign_count = last - 2
    assert "cloned" in str(refused(REJECTED, fallback.verify, key))
    assert key.sign_count == last


def test_a_counter_that_falls_back_to_zero_is_refused(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    key.counter_enabled = False  # the key now says 0 after having said more
    assert "cloned" in str(refused(REJECTED, fallback.verify, key))


def test_an_assertion_without_user_presence_is_refused(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    key.report_up = False
    error = refused(REJECTED, fallback.verify, key)
    assert "user present" in str(error).lower()


def test_the_user_is_prompted_to_touch(vault: Vault) -> None:
    class Prompts(UserInteraction):
        def __init__(self) -> None:
            self.touch_prompts = 0

        def prompt_up(self) -> None:
            self.touch_prompts += 1

    prompts = Prompts()
    fallback = SecurityKeyFallback(vault, user_interaction=prompts)
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    fallback.verify(key)
    assert prompts.touch_prompts == 2


def test_a_key_nobody_touches_gives_a_typed_error(vault: Vault) -> None:
    fallback = SecurityKeyFallback(vault, timeout_s=0.3)
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")

    key.touch = "deny"
    assert "not touched" in str(refused(NOT_TOUCHED, fallback.verify, key))

    key.touch, key.ignore_wait_s = "ignore", 30.0
    assert "not touched" in str(refused(NOT_TOUCHED, fallback.verify, key))
    # Our timeout cancelled the wait (the key itself would have waited 30 s): the key saw
    # the cancel, which no clock reading under load can get wrong.
    assert key.cancelled == 1


def test_enrolment_without_a_touch_stores_nothing(fallback: SecurityKeyFallback) -> None:
    refused(NOT_TOUCHED, fallback.enroll_key, SoftCtap2Key(touch="deny"), label="k")
    assert fallback.keys() == []


def test_a_forged_attestation_is_refused_at_enrolment(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key(attestation="packed")
    key.forge_attestation = True
    assert "registration is invalid" in str(refused(REJECTED, fallback.enroll_key, key, label="k"))
    assert fallback.keys() == []


def test_the_same_key_cannot_be_enrolled_twice(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="first")
    assert "already enrolled" in str(refused(REJECTED, fallback.enroll_key, key, label="second"))
    refused(Reason.INVALID_ARGUMENT, fallback.enroll_key, SoftCtap2Key(), label="first")
    enrolled = fallback.keys()
    assert [k.label for k in enrolled] == ["first"]


def test_a_client_with_a_foreign_origin_is_refused(tmp_path: Path, fallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    bank = Fido2Client(key, DefaultClientDataCollector(ORIGIN))
    refused(Reason.INVALID_ARGUMENT, fallback.verify, bank)
    # Another device's origin passes the client's RP-id rule but not this device's check.
    other = SecurityKeyFallback(Vault.create(tmp_path / "other", RawKey(b"\x09" * 32)))
    foreign = Fido2Client(key, DefaultClientDataCollector(other.origin))
    assert "origin" in str(refused(REJECTED, fallback.verify, foreign)).lower()


def test_an_unplugged_key_gives_a_typed_error(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    key.unplugged = True
    refused(UNAVAILABLE, fallback.verify, key)


def test_bad_arguments(fallback: SecurityKeyFallback, vault: Vault) -> None:
    for label in ("", " padded", "x" * 65, "tab\there", 7):
        refused(Reason.INVALID_ARGUMENT, fallback.enroll_key, SoftCtap2Key(), label=label)
    refused(Reason.INVALID_ARGUMENT, fallback.verify, "not a key")
    with pytest.raises(DeviceBioError):
        SecurityKeyFallback(vault, timeout_s=0)


# ---- stored state ---------------------------------------------------------------------------


def test_a_swapped_public_key_fails_the_signature_check(fallback, vault: Vault) -> None:
    blue, green = SoftCtap2Key(), SoftCtap2Key()
    fallback.enroll_key(blue, label="blue")
    fallback.enroll_key(green, label="green")
    records = {vault.get(KIND, rid)["label"]: rid for rid in vault.ids(KIND)}
    blue_record = vault.get(KIND, records["blue"])
    blue_record["public_key"] = vault.get(KIND, records["green"])["public_key"]  # valid, wrong
    vault.put(KIND, records["blue"], blue_record)
    error = refused(REJECTED, fallback.verify, blue)
    assert "signature" in str(error).lower()
    assert fallback.verify(green).verified


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("public_key", b"\xa1\x01\x02"),  # a COSE map without an algorithm
        ("public_key", b"not cbor"),
        ("counter", "12"),
        ("counter", -1),
        ("aaguid", b"short"),
        ("credential_id", b""),
    ],
)
def test_a_malformed_record_is_refused(fallback, vault: Vault, field: str, value: object) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    (rid,) = vault.ids(KIND)
    record = vault.get(KIND, rid)
    record[field] = value
    vault.put(KIND, rid, record)
    refused(Reason.RECORD_CORRUPT, fallback.verify, key)
    refused(Reason.RECORD_CORRUPT, fallback.keys)


def test_a_broken_ec_point_is_refused(fallback, vault: Vault) -> None:
    from fido2 import cbor

    key = SoftCtap2Key(algorithms=(-7,))
    fallback.enroll_key(key, label="k")
    (rid,) = vault.ids(KIND)
    record = vault.get(KIND, rid)
    cose: Any = cbor.decode(record["public_key"])
    cose[-3] = bytes(32)  # y no longer on the curve
    record["public_key"] = cbor.encode(cose)
    vault.put(KIND, rid, record)
    refused(Reason.RECORD_CORRUPT, fallback.verify, key)


def test_a_flipped_byte_on_disk_is_refused(fallback, vault: Vault) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    [path] = (vault.path / KIND).iterdir()
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    refused(Reason.RECORD_TAMPERED, fallback.verify, key)


def test_remove(fallback: SecurityKeyFallback) -> None:
    key = SoftCtap2Key()
    fallback.enroll_key(key, label="k")
    fallback.remove("k")
    assert fallback.keys() == []
    refused(NOT_ENROLLED, fallback.verify, key)
    refused(NOT_ENROLLED, fallback.remove, "k")
    fallback.enroll_key(key, label="k")  # gone from the exclude list too
    assert fallback.verify(key).verified


def test_find_security_keys_lists_what_hid_reports_and_never_raises(monkeypatch) -> None:
    # The OS's HID enumeration is the edge: the key list it reports comes back as it is, and
    # whatever stops enumeration (no hidraw, no permission, an unsupported platform) means
    # "no key here", never an exception.
    import devicebio.fallback.security_key as module

    def listing(*items: object):  # type: ignore[no-untyped-def]
        def list_devices():  # type: ignore[no-untyped-def]
            for item in items:
                if isinstance(item, BaseException):
                    raise item
                yield item

        monkeypatch.setattr(module.CtapHidDevice, "list_devices", staticmethod(list_devices))

    blue, green = SoftCtap2Key(), SoftCtap2Key()
    listing(blue, green)
    assert find_security_keys() == [blue, green]
    listing()
    assert find_security_keys() == []
    for failure in (
        PermissionError(13, "/dev/hidraw0"),
        FileNotFoundError("/sys/class/hidraw"),
        OSError("unplugged"),
        NotImplementedError("no HID backend on this platform"),
    ):
        listing(failure)
        assert find_security_keys() == [], failure


# ---- end to end: lock-out cleared by the key, assertion verified by the RP ------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _authenticate_with_security_key(auth: Authenticator, key, **kwargs):
    return auth.authenticate_with_security_key(key, **kwargs)


def test_lockout_is_cleared_by_the_security_key_and_the_rp_verifies(
    tmp_path: Path, vault: Vault
) -> None:
    from helpers.challenges import fixed_challenge

    from verifier import Assurance, Policy, SQLiteStore, verify_assertion, verify_registration
    from verifier.challenges import Purpose

    clock = Clock()
    auth = Authenticator(vault, clock=clock)
    policy: AttemptPolicy = auth.policy.attempts
    key = SoftCtap2Key()
    auth.security_keys.enroll_key(key, label="backup key")
    Pin(vault).set("480213")

    store = SQLiteStore(tmp_path / "rp.sqlite")
    ch = fixed_challenge(store, "test_security_key/1", user="colin", purpose=Purpose.REGISTER)
    reg = auth.register_with_pin("480213", user_name="colin", rp_id=RP, origin=ORIGIN, challenge=ch)
    verify_registration(
        credential=reg.to_json(),
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        user="colin",
    )

    # Face failures up to the hard cap: face unlock is disabled, not merely delayed.
    for _ in range(policy.hard_cap):
        auth.limiter.record_failure()
    status = auth.limiter.status()
    assert (status.allowed, status.state) == (False, "disabled")
    # colin is enrolled (a template stored as enrolment stores it), then locked out.
    from devicebio.authenticator import FACE_KEY, _check_user
    from devicebio.protect import TemplateKey

    template_key = TemplateKey.new()
    vault.put(FACE_KEY, _check_user("colin"), template_key.to_record())
    enrolled = template_key.protect(np.ones((1, 128), np.float32))
    auth._put_templates("colin", enrolled, clock(), clock() + 86_400)
    no_frames: Any = None  # a locked-out attempt is refused before any frame is read
    locked = auth.authenticate("colin", no_frames, rp_id=RP, origin=ORIGIN, challenge=b"c" * 32)
    assert locked.outcome.code is OutcomeCode.LOCKED_OUT
    assert Fallback.SECURITY_KEY in locked.fallbacks

    # A stranger's key does not lift it.
    with pytest.raises(DeviceBioError):
        _authenticate_with_security_key(
            auth, SoftCtap2Key(), rp_id=RP, origin=ORIGIN, challenge=b"d" * 32
        )
    assert not auth.limiter.status().allowed

    ch = fixed_challenge(store, "test_security_key/2", user="colin", purpose=Purpose.AUTHENTICATE)
    assertion = _authenticate_with_security_key(auth, key, rp_id=RP, origin=ORIGIN, challenge=ch)
    assert auth.limiter.status().allowed
    assert auth.limiter.status().consecutive_failures == 0

    verified = verify_assertion(
        credential=assertion.to_json(),
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        policy=Policy(),
    )
    assert verified.method is Method.SECURITY_KEY
    assert verified.assurance is Assurance.STRONG and verified.user_verified
    assert verified.model is None and verified.user == "colin"

    # An RP that does not accept security keys says so.
    from verifier import Reason as VReason
    from verifier import VerifierError

    ch = fixed_challenge(store, "test_security_key/3", user="colin", purpose=Purpose.AUTHENTICATE)
    again = _authenticate_with_security_key(auth, key, rp_id=RP, origin=ORIGIN, challenge=ch)
    with pytest.raises(VerifierError) as info:
        verify_assertion(
            credential=again.to_json(),
            expected_challenge=ch,
            expected_origin=ORIGIN,
            expected_rp_id=RP,
            store=store,
            policy=Policy(accepted_methods=frozenset({Method.FACE, Method.PIN})),
        )
    assert info.value.reason is VReason.POLICY_METHOD_REFUSED
