"""Every kind of record the SDK keeps in a vault, and the shape of each body: one place.

The vault itself stores any CBOR value under ``(kind, id)``; this module is the list of what
is actually written there, by whom, and the check each body passes when it is read back. A
body that is not what its writer writes is ``RECORD_CORRUPT`` (it authenticated, so a broken
writer or an older format, never silently accepted). A record that was never
written means "not set" (no PIN yet); one the vault's manifest lists whose file is gone is
RECORD_MISSING, and an older copy put back is RECORD_ROLLED_BACK (see
:mod:`devicebio.store.vault`): a deleted PIN never reads as "no PIN".

Checks here are about shape: fields, types, sizes, version. What a value *means* stays with
its owner: :meth:`devicebio.protect.TemplateKey.from_record` knows the transform's algorithm,
:mod:`devicebio.fallback.security_key` that a COSE key loads.

=====================  ======================  ============================================
kind                   id                      written by
=====================  ======================  ============================================
``device``             ``secret``              :meth:`~devicebio.store.vault.Vault.create`
``credential``         hash of (RP id, user)   :mod:`devicebio.hazmat.credentials`
``face``               hash of the user name   :class:`devicebio.Authenticator` (templates)
``face_key``           hash of the user name   :class:`devicebio.Authenticator` (the
                                               template-protection key)
``consent``            hash of the user name   :class:`devicebio.Authenticator`
``knowledge``          ``pin``, ``recovery``   :class:`~devicebio.fallback.knowledge.Pin`,
                                               :class:`~devicebio.fallback.knowledge.RecoveryCodes`
``attempts``           ``face``                :class:`~devicebio.fallback.attempts.AttemptLimiter`
``security_key``       hash of the key label   :mod:`devicebio.fallback.security_key`
=====================  ======================  ============================================
"""

from __future__ import annotations

import enum
from typing import TypedDict, cast

from devicebio.errors import DeviceBioError, Reason

__all__ = [
    "DEVICE_SECRET_ID",
    "FACE_ATTEMPTS_ID",
    "PIN_ID",
    "RECOVERY_ID",
    "AttemptsBody",
    "ConsentBody",
    "CredentialBody",
    "FaceBody",
    "FaceKeyBody",
    "Kind",
    "PinBody",
    "RecoveryBody",
    "SecurityKeyBody",
    "argon2_cost_ok",
    "check_attempts",
    "check_consent",
    "check_credential",
    "check_device_secret",
    "check_face",
    "check_face_key",
    "check_pin",
    "check_recovery",
    "check_security_key",
]


class Kind(enum.StrEnum):
    DEVICE = "device"
    CREDENTIAL = "credential"
    FACE = "face"
    FACE_KEY = "face_key"
    CONSENT = "consent"
    KNOWLEDGE = "knowledge"
    ATTEMPTS = "attempts"
    SECURITY_KEY = "security_key"


# The fixed ids (the other kinds are keyed by a hash of their subject).
DEVICE_SECRET_ID = "secret"  # noqa: S105 (a record id, kind DEVICE)
PIN_ID = "pin"  # kind KNOWLEDGE
RECOVERY_ID = "recovery"  # kind KNOWLEDGE
FACE_ATTEMPTS_ID = "face"  # kind ATTEMPTS

DEVICE_SECRET_SIZE = 32
CREDENTIAL_VERSION = 1
SECURITY_KEY_VERSION = 1
MAX_COUNTER = 0xFFFFFFFF  # a WebAuthn signature counter is 32 bits
PIN_SALT_SIZE, PIN_HASH_SIZE = 16, 32  # Argon2id's salt; the derived 32-byte verifier
ARGON2_OPS = (1, 4)  # libsodium's OPSLIMIT_MIN .. OPSLIMIT_SENSITIVE
ARGON2_MEM = (8 * 1024, 1024**3)  # MEMLIMIT_MIN .. MEMLIMIT_SENSITIVE


def _corrupt(what: str) -> DeviceBioError:
    return DeviceBioError(Reason.RECORD_CORRUPT, f"{what} record is malformed")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counter(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNTER


# ---- device ---------------------------------------------------------------------------------


def check_device_secret(value: object) -> bytes:
    """32 random bytes created with the vault: the root of per-RP device ids and of the keys
    that hash recovery codes and name the security-key origin."""
    if not isinstance(value, bytes) or len(value) != DEVICE_SECRET_SIZE:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "device secret is malformed")
    return value


# ---- credentials ----------------------------------------------------------------------------


class CredentialBody(TypedDict):
    """One WebAuthn credential: the Ed25519 seed never leaves this record."""

    v: int
    rp_id: str
    user: str
    user_handle: bytes
    credential_id: bytes
    seed: bytes
    counter: int
    created_at: int


def check_credential(value: object) -> CredentialBody:
    ok = (
        isinstance(value, dict)
        and value.get("v") == CREDENTIAL_VERSION
        and isinstance(value.get("rp_id"), str)
        and isinstance(value.get("user"), str)
        and isinstance(value.get("user_handle"), bytes)
        and isinstance(value.get("credential_id"), bytes)
        and isinstance(value.get("seed"), bytes)
        and len(value["seed"]) == 32
        and _counter(value.get("counter"))
        and type(value.get("created_at")) is int
    )
    if not ok:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "credential record is malformed")
    return cast(CredentialBody, value)


# ---- face -----------------------------------------------------------------------------------


class FaceBody(TypedDict):
    """A user's protected templates (little-endian float32 vectors, already transformed by
    the user's template key) and the model that produced them."""

    user: str
    model: str
    templates: list[bytes]
    enrolled_at: float
    expires_at: float


def check_face(value: object) -> FaceBody:
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("user"), str)
        and isinstance(value.get("model"), str)
        and isinstance(value.get("templates"), list)
        and len(value["templates"]) > 0
        and all(isinstance(t, bytes) and t and len(t) % 4 == 0 for t in value["templates"])
        and len({len(t) for t in value["templates"]}) == 1
        and _number(value.get("enrolled_at"))
        and _number(value.get("expires_at"))
    )
    if not ok:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "face template record")
    return cast(FaceBody, value)


class FaceKeyBody(TypedDict):
    """The per-enrolment template-protection key (:class:`devicebio.protect.TemplateKey`)."""

    alg: str
    dim: int
    seed: bytes


FACE_KEY_FIELDS = frozenset(FaceKeyBody.__annotations__)


def check_face_key(value: object) -> FaceKeyBody:
    if not isinstance(value, dict) or set(value.keys()) != FACE_KEY_FIELDS:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "template key record is malformed")
    alg, dim, seed = value["alg"], value["dim"], value["seed"]
    if not isinstance(alg, str) or type(dim) is not int or not isinstance(seed, bytes):
        raise DeviceBioError(Reason.RECORD_CORRUPT, "template key record has wrong types")
    return cast(FaceKeyBody, value)


class ConsentBody(TypedDict):
    """What the user agreed to when enrolling: purpose, retention, and when."""

    purpose: str
    retention_days: int
    at: float


def check_consent(value: object) -> ConsentBody:
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("purpose"), str)
        and type(value.get("retention_days")) is int
        and _number(value.get("at"))
    )
    if not ok:
        raise _corrupt("consent")
    return cast(ConsentBody, value)


# ---- fallbacks ------------------------------------------------------------------------------


class PinBody(TypedDict):
    """The PIN as an Argon2id hash with its salt and cost, and the wrong-entry counter."""

    salt: bytes
    ops: int
    mem: int
    hash: bytes
    failures: int


def check_pin(value: object) -> PinBody:
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("hash"), bytes)
        and isinstance(value.get("salt"), bytes)
        and isinstance(value.get("failures"), int)
        and isinstance(value.get("ops"), int)
        and isinstance(value.get("mem"), int)
    )
    if not ok:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "PIN record is malformed")
    assert isinstance(value, dict)
    # Sealed is not the same as sane: bound what the record makes Argon2id do (libsodium
    # raises below its minimums, and a huge cost would hang the check).
    sane = (
        argon2_cost_ok(value["ops"], value["mem"])
        and len(value["salt"]) == PIN_SALT_SIZE
        and len(value["hash"]) == PIN_HASH_SIZE
        and type(value["failures"]) is int
        and 0 <= value["failures"] <= MAX_COUNTER
    )
    if not sane:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "PIN record: cost or sizes out of range")
    return cast(PinBody, value)


def argon2_cost_ok(ops: object, mem: object) -> bool:
    """A PIN hash's Argon2id cost: libsodium's minimums up to its "sensitive" level."""
    return (
        type(ops) is int
        and type(mem) is int
        and ARGON2_OPS[0] <= ops <= ARGON2_OPS[1]
        and ARGON2_MEM[0] <= mem <= ARGON2_MEM[1]
    )


class RecoveryBody(TypedDict):
    """Keyed BLAKE2b hashes of the recovery codes not used yet."""

    unused: list[bytes]


def check_recovery(value: object) -> RecoveryBody:
    unused = value.get("unused") if isinstance(value, dict) else None
    if not isinstance(unused, list) or not all(isinstance(h, bytes) for h in unused):
        raise DeviceBioError(Reason.RECORD_CORRUPT, "recovery-code record is malformed")
    return cast(RecoveryBody, value)


class AttemptsBody(TypedDict):
    """Consecutive face failures, the time before which no face attempt is allowed, and when a
    knowledge factor last succeeded (seconds since the epoch)."""

    failures: int
    not_before: float
    last_knowledge: float


def check_attempts(value: object) -> AttemptsBody:
    ok = (
        isinstance(value, dict)
        and isinstance(value.get("failures"), int)
        and isinstance(value.get("not_before"), int | float)
        and isinstance(value.get("last_knowledge"), int | float)
    )
    if not ok:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "attempt-limit record is malformed")
    return cast(AttemptsBody, value)


class SecurityKeyBody(TypedDict):
    """An enrolled FIDO2 security key: public data only (the private key stays on the key)."""

    v: int
    label: str
    credential_id: bytes
    public_key: bytes  # canonical CBOR of the COSE key
    aaguid: bytes
    fmt: str
    counter: int
    uv: bool
    created_at: float
    last_used_at: float | None


def check_security_key(value: object) -> SecurityKeyBody:
    ok = (
        isinstance(value, dict)
        and value.get("v") == SECURITY_KEY_VERSION
        and isinstance(value.get("label"), str)
        and isinstance(value.get("credential_id"), bytes)
        and 1 <= len(value["credential_id"]) <= 1023
        and isinstance(value.get("public_key"), bytes)
        and isinstance(value.get("aaguid"), bytes)
        and len(value["aaguid"]) == 16
        and isinstance(value.get("fmt"), str)
        and _counter(value.get("counter"))
        and type(value.get("uv")) is bool
        and isinstance(value.get("created_at"), int | float)
        and (value.get("last_used_at") is None or isinstance(value["last_used_at"], int | float))
    )
    if not ok:
        raise DeviceBioError(Reason.RECORD_CORRUPT, "security-key record is malformed")
    return cast(SecurityKeyBody, value)
