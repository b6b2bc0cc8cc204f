"""The record kinds of devicebio.store.records are every kind the SDK writes, and each body
check refuses what its writer never writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicebio.errors import DeviceBioError, Reason
from devicebio.fallback import AttemptLimiter, Pin, RecoveryCodes
from devicebio.hazmat.credentials import Credentials, UserVerification
from devicebio.protocol import LivenessClaim, Method
from devicebio.store import RawKey, Vault, records

CHECKS = [
    records.check_attempts,
    records.check_consent,
    records.check_credential,
    records.check_device_secret,
    records.check_face,
    records.check_face_key,
    records.check_pin,
    records.check_recovery,
    records.check_security_key,
]


def test_every_kind_written_by_the_fallbacks_and_credentials_is_listed(tmp_path: Path) -> None:
    vault = Vault.create(tmp_path / "v", RawKey(b"\x01" * 32))
    Pin(vault).set("493817")
    RecoveryCodes(vault).new()
    AttemptLimiter(vault).start()
    verified = UserVerification(Method.PIN, LivenessClaim.none(), None, verified=True)
    Credentials(vault).register(
        rp_id="example.com",
        origin="https://example.com",
        challenge=b"c" * 32,
        user_name="alice",
        verification=verified,
    )
    written = {p.name for p in vault.path.iterdir() if p.is_dir()}
    assert written == {"device", "knowledge", "attempts", "credential"}
    assert written <= {k.value for k in records.Kind}
    # and every body read back passes its check
    records.check_device_secret(vault.get(records.Kind.DEVICE, records.DEVICE_SECRET_ID))
    records.check_pin(vault.get(records.Kind.KNOWLEDGE, records.PIN_ID))
    records.check_recovery(vault.get(records.Kind.KNOWLEDGE, records.RECOVERY_ID))
    records.check_attempts(vault.get(records.Kind.ATTEMPTS, records.FACE_ATTEMPTS_ID))
    (rid,) = vault.ids(records.Kind.CREDENTIAL)
    records.check_credential(vault.get(records.Kind.CREDENTIAL, rid))


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("body", [None, {}, [], b"", "x", {"v": 1}], ids=repr)
def test_a_body_its_writer_never_writes_is_corrupt(check, body) -> None:
    with pytest.raises(DeviceBioError) as err:
        check(body)
    assert err.value.reason is Reason.RECORD_CORRUPT


def test_a_face_record_needs_templates_of_one_length() -> None:
    good = {
        "user": "a",
        "model": "m",
        "templates": [b"\0" * 512, b"\1" * 512],
        "enrolled_at": 1.0,
        "expires_at": 2.0,
    }
    assert records.check_face(good) is good
    for bad in ([], [b"\0" * 512, b"\0" * 508], [b"\0" * 511], ["x"]):
        with pytest.raises(DeviceBioError):
            records.check_face({**good, "templates": bad})
