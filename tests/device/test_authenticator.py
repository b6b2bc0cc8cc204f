"""The Authenticator on real faces: enrol, match, refuse, lock out, fall back, renew, remove."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the device tests need the [device] extra (numpy)")

cv2 = pytest.importorskip("cv2", reason="face authentication needs the [device] extra")

from helpers.challenges import fixed_challenge  # noqa: E402

from devicebio.authenticator import Authenticator, Consent  # noqa: E402
from devicebio.errors import DeviceBioError, Reason  # noqa: E402
from devicebio.fallback import Fallback, Pin, RecoveryCodes  # noqa: E402
from devicebio.outcome import OutcomeCode  # noqa: E402
from devicebio.protocol import Method  # noqa: E402
from devicebio.sources import StaticFrames  # noqa: E402
from devicebio.store.vault import RawKey, Vault  # noqa: E402
from verifier import Policy, SQLiteStore, verify_assertion  # noqa: E402
from verifier.challenges import Purpose  # noqa: E402

RP, ORIGIN = "bank.example", "https://bank.example"
PIN = "480213"
A, B = "Colin_Powell", "Tony_Blair"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def faces(lfw_dir: Path):
    def load(name: str, *numbers: int) -> list[np.ndarray]:
        out = []
        for n in numbers:
            bgr = cv2.imread(str(lfw_dir / "images" / name / f"{name}_{n:04d}.jpg"))
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return out

    return load


@pytest.fixture()
def setup(tmp_path: Path, pipeline, faces):
    vault = Vault.create(tmp_path / "vault", RawKey(b"\x05" * 32))
    clock = Clock()
    auth = Authenticator(vault, pipeline=pipeline, clock=clock)
    result = auth.enroll("colin", StaticFrames(faces(A, 1, 2, 3)), consent=Consent("test", 30))
    assert result.ok, result
    Pin(vault).set(PIN)
    auth.register_with_pin(PIN, user_name="colin", rp_id=RP, origin=ORIGIN, challenge=b"r" * 32)
    return auth, vault, clock


def rp_state(auth: Authenticator, tmp_path: Path):
    store = SQLiteStore(tmp_path / "rp.sqlite")
    from verifier import verify_registration

    ch = fixed_challenge(store, "test_authenticator/1", user="colin", purpose=Purpose.REGISTER)
    reg = auth.register_with_pin(PIN, user_name="colin", rp_id=RP, origin=ORIGIN, challenge=ch)
    verify_registration(
        credential=reg.to_json(),
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        user="colin",
    )
    return store


def test_genuine_face_is_accepted_and_verified_by_the_rp(setup, faces, tmp_path) -> None:
    auth, _, _ = setup
    store = rp_state(auth, tmp_path)
    ch = fixed_challenge(store, "test_authenticator/2", user="colin", purpose=Purpose.AUTHENTICATE)
    result = auth.authenticate(
        "colin", StaticFrames(faces(A, 4, 5, 6)), rp_id=RP, origin=ORIGIN, challenge=ch
    )
    assert result.outcome.code is OutcomeCode.MATCHED and result.assertion is not None
    verified = verify_assertion(
        credential=result.assertion.to_json(),
        expected_challenge=ch,
        expected_origin=ORIGIN,
        expected_rp_id=RP,
        store=store,
        policy=Policy(),
    )
    assert verified.method is Method.FACE
    assert verified.model == auth.pipeline.model_id


def test_impostor_is_refused_and_counted(setup, faces) -> None:
    auth, _, _ = setup
    result = auth.authenticate(
        "colin",
        StaticFrames(faces(B, 1, 2, 3)),
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"c" * 32,
    )
    assert result.outcome.code is OutcomeCode.NO_MATCH and result.assertion is None
    assert auth.limiter.status().consecutive_failures == 1


def test_five_failures_lock_out_then_pin_fallback(setup, faces) -> None:
    auth, vault, _clock = setup
    Pin(vault).set("480213")
    impostor = faces(B, 1, 2, 3)
    for _ in range(5):
        result = auth.authenticate(
            "colin", StaticFrames(impostor), rp_id=RP, origin=ORIGIN, challenge=b"c" * 32
        )
        assert result.outcome.code is OutcomeCode.NO_MATCH
    assert result.fallbacks == (Fallback.PIN, Fallback.RECOVERY, Fallback.SECURITY_KEY)
    locked = auth.authenticate(
        "colin",
        StaticFrames(faces(A, 4, 5, 6)),
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"c" * 32,
    )
    assert locked.outcome.code is OutcomeCode.LOCKED_OUT and locked.assertion is None
    assertion = auth.authenticate_with_pin("480213", rp_id=RP, origin=ORIGIN, challenge=b"d" * 32)
    assert assertion.sign_count >= 1
    assert auth.limiter.status().allowed


def test_dark_frames_give_advice_and_no_failed_attempt(setup, faces) -> None:
    auth, _, _ = setup
    dark = [(f * 0.12).astype(np.uint8) for f in faces(A, 4, 5, 6)]
    result = auth.authenticate(
        "colin", StaticFrames(dark), rp_id=RP, origin=ORIGIN, challenge=b"c" * 32
    )
    assert result.outcome.code is OutcomeCode.TOO_DARK and "light" in result.outcome.message
    assert auth.limiter.status().consecutive_failures == 0


def test_enrolment_refuses_two_people(tmp_path: Path, pipeline, faces) -> None:
    vault = Vault.create(tmp_path / "v", RawKey(b"\x06" * 32))
    auth = Authenticator(vault, pipeline=pipeline)
    mixed = faces(A, 1, 2) + faces(B, 1)
    result = auth.enroll("x", StaticFrames(mixed), consent=Consent("test", 30))
    assert not result.ok and auth.users() == []


def test_enrolment_without_enough_good_frames(tmp_path: Path, pipeline) -> None:
    vault = Vault.create(tmp_path / "v", RawKey(b"\x06" * 32))
    auth = Authenticator(vault, pipeline=pipeline)
    blank = [np.full((240, 320, 3), 90, np.uint8)] * 4
    result = auth.enroll("x", StaticFrames(blank), consent=Consent("test", 30))
    assert result.outcome.code is OutcomeCode.NO_FACE


def test_retention_expiry_deletes_templates(setup, faces) -> None:
    auth, _vault, clock = setup
    clock.now += 31 * 86_400
    with pytest.raises(DeviceBioError) as info:
        auth.authenticate(
            "colin", StaticFrames(faces(A, 4)), rp_id=RP, origin=ORIGIN, challenge=b"c" * 32
        )
    assert info.value.reason is Reason.NOT_ENROLLED
    assert auth.users() == []


def test_renew_makes_old_templates_useless(setup, faces) -> None:
    auth, vault, _ = setup
    rid = next(iter(vault.ids("face")))
    old_record = vault.get("face", rid)
    auth.renew("colin")
    ok = auth.authenticate(
        "colin",
        StaticFrames(faces(A, 4, 5, 6)),
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"c" * 32,
    )
    assert ok.outcome.code is OutcomeCode.MATCHED
    vault.put("face", rid, old_record)  # an attacker restores the pre-renewal templates
    stale = auth.authenticate(
        "colin",
        StaticFrames(faces(A, 4, 5, 6)),
        rp_id=RP,
        origin=ORIGIN,
        challenge=b"c" * 32,
    )
    assert stale.outcome.code is OutcomeCode.NO_MATCH


def test_users_and_remove(setup) -> None:
    auth, vault, _ = setup
    [user] = auth.users()
    assert (user.user, user.templates, user.purpose) == ("colin", 3, "test")
    auth.remove("colin")
    assert auth.users() == []
    for kind in ("face", "face_key", "consent"):
        assert vault.ids(kind) == []
    with pytest.raises(DeviceBioError) as info:
        auth.renew("colin")
    assert info.value.reason is Reason.NOT_ENROLLED


def test_deleting_the_attempts_file_does_not_lift_a_lockout(setup, faces) -> None:
    auth, vault, _ = setup
    for _ in range(5):
        auth.authenticate("colin", StaticFrames(faces(B, 1)), rp_id=RP, origin=ORIGIN,
                          challenge=b"c" * 32)  # fmt: skip
    assert not auth.limiter.status().allowed
    for path in (vault.path / "attempts").iterdir():
        path.unlink()  # an attacker with file access but no key
    status = auth.limiter.status()
    assert not status.allowed and status.state == "disabled"
    auth.authenticate_with_recovery_code(
        RecoveryCodes(vault).new()[0], rp_id=RP, origin=ORIGIN, challenge=b"d" * 32
    )
    assert auth.limiter.status().allowed


def test_registration_needs_the_pin_and_clears_the_face_lockout(setup, faces) -> None:
    auth, _vault, _ = setup
    for _ in range(5):
        auth.authenticate("colin", StaticFrames(faces(B, 1)), rp_id=RP, origin=ORIGIN,
                          challenge=b"c" * 32)  # fmt: skip
    assert not auth.limiter.status().allowed
    with pytest.raises(DeviceBioError) as info:
        auth.register_with_pin("999999", user_name="colin", rp_id=RP, origin=ORIGIN,
                               challenge=b"r" * 32)  # fmt: skip
    assert info.value.reason is Reason.PIN_WRONG
    assert not auth.limiter.status().allowed
    reg = auth.register_with_pin(PIN, user_name="colin", rp_id=RP, origin=ORIGIN,
                                 challenge=b"s" * 32)  # fmt: skip
    assert auth.limiter.status().allowed
    [info_] = auth.credentials()
    assert (info_.rp_id, info_.user, info_.credential_id) == (RP, "colin", reg.credential_id)
    auth.remove_credential(RP, "colin")
    assert auth.credentials() == []


def test_the_authenticator_exposes_no_signer_of_claimed_verifications(setup) -> None:
    """Hazmat the right way round: nothing public on the ceremony object signs a
    verification the caller merely claims."""
    auth, _, _ = setup
    from devicebio.hazmat.credentials import Credentials

    public = {name: getattr(auth, name) for name in dir(auth) if not name.startswith("_")}
    assert not any(isinstance(v, Credentials) for v in public.values())


# ---- issue 10: attacks on the ceremony ------------------------------------------------------


def test_one_users_face_cannot_sign_another_users_credential(setup, faces) -> None:
    """#3: enrol bob (Tony), register only alice (colin): bob's face matched bob's templates
    and then signed with the RP's only credential, which the verifier reported as colin."""
    auth, _, _ = setup
    enrolled = auth.enroll("tony", StaticFrames(faces(B, 1, 2, 3)), consent=Consent("t", 30))
    assert enrolled.ok, enrolled
    with pytest.raises(DeviceBioError) as info:
        auth.authenticate(
            "tony", StaticFrames(faces(B, 4, 5, 6)), rp_id=RP, origin=ORIGIN, challenge=b"c" * 32
        )
    assert info.value.reason is Reason.CREDENTIAL_NOT_FOUND
    # colin's own face still releases colin's credential
    ok = auth.authenticate(
        "colin", StaticFrames(faces(A, 4, 5, 6)), rp_id=RP, origin=ORIGIN, challenge=b"c" * 32
    )
    assert ok.assertion is not None and ok.assertion.user == "colin"


class _Gate:
    """A camera whose first frame comes only once every attempt has started, so all of them
    are past whatever was checked before capture when the first comparison runs."""

    def __init__(self, images: list[np.ndarray], barrier: threading.Barrier) -> None:
        self._images, self._barrier = images, barrier

    def frames(self):
        self._barrier.wait()
        yield from StaticFrames(self._images).frames()

    def close(self) -> None:
        pass


class _OneAtATime:
    """The real pipeline, called by one thread at a time (it is not meant to be shared)."""

    def __init__(self, pipeline) -> None:
        self._pipeline, self._lock = pipeline, threading.Lock()
        self.model_id = pipeline.model_id

    def analyze(self, rgb):
        with self._lock:
            return self._pipeline.analyze(rgb)


def test_parallel_attempts_cannot_exceed_the_face_attempt_limit(setup, faces, pipeline) -> None:
    """#5: 30 simultaneous impostor attempts (each with its own vault handle, so only the
    vault's file lock orders them) were all compared against a limit of 5. The attempt is
    now counted under the lock before the comparison."""
    auth, vault, clock = setup
    n = 30
    barrier = threading.Barrier(n, timeout=120)
    shared = _OneAtATime(pipeline)
    impostor = faces(B, 1)
    results: list[OutcomeCode] = []

    def attempt() -> None:
        handle = Vault.open(vault.path, RawKey(b"\x05" * 32))
        mine = Authenticator(handle, pipeline=shared, clock=clock)
        result = mine.authenticate(
            "colin", _Gate(impostor, barrier), rp_id=RP, origin=ORIGIN, challenge=b"c" * 32
        )
        results.append(result.outcome.code)

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for future in [pool.submit(attempt) for _ in range(n)]:
            future.result()
    compared = results.count(OutcomeCode.NO_MATCH)
    assert compared == 5, f"{compared} impostor attempts compared, limit 5"
    assert results.count(OutcomeCode.LOCKED_OUT) == n - 5
    assert auth.limiter.status().consecutive_failures == 5


def test_an_enrolment_of_two_people_says_so_without_a_distance(tmp_path, pipeline, faces) -> None:
    """#11: the refusal carried the pair's face distance and the threshold."""
    vault = Vault.create(tmp_path / "v2", RawKey(b"\x06" * 32))
    auth = Authenticator(vault, pipeline=pipeline)
    mixed = [*faces(A, 1), *faces(B, 1), *faces(A, 2)]
    result = auth.enroll("mix", StaticFrames(mixed), consent=Consent("t", 30))
    assert not result.ok and result.outcome.code is OutcomeCode.SEVERAL_FACES
    assert (result.outcome.measured, result.outcome.limit) == (None, None)
    assert not any(ch.isdigit() for ch in result.outcome.message), result.outcome.message
