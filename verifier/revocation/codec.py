"""The revocation list's wire format: COSE_Sign1 encode (sign) and strict parse.

Wire format (format version 1)
------------------------------
A revocation list is a COSE_Sign1 message (RFC 9052, section 4.2), CBOR tag 18::

    COSE_Sign1 = #6.18([
        protected:   bstr .cbor {1: -8},        ; alg: EdDSA (Ed25519), exactly h'A10127'
        unprotected: {} / {4: bstr},            ; optional kid (<= 64 bytes), not signed
        payload:     bstr .cbor RevocationList,
        signature:   bstr .size 64,             ; Ed25519 over Sig_structure
    ])
    Sig_structure = ["Signature1", protected, h'', payload]   ; external_aad is empty

The payload is a CBOR map with small integer keys, encoded canonically (RFC 7049 section
3.9 / cbor2 ``canonical=True``); both the message and the payload must be byte-for-byte the
canonical encoding of what they decode to, so one list has exactly one valid encoding and
"same serial, same bytes" is a meaningful test::

    RevocationList = {
        1: uint,             ; format version, = 1
        2: tstr,             ; issuer, 1..256 characters (display only; trust = the key)
        3: uint,             ; serial, strictly increasing per issuer, < 2**63
        4: uint,             ; this_update, POSIX seconds
        5: uint,             ; next_update, POSIX seconds, > this_update
        6: [* Entry],        ; no two entries with the same (kind, value)
    }
    Entry = {
        1: tstr,             ; kind: "credential_id" / "device_key" / "model_id" / "sdk_version"
        2: bstr / tstr,      ; value: bstr (1..1023 bytes) for credential_id and device_key,
                             ;        tstr (1..256 characters) for model_id and sdk_version
        3: tstr,             ; reason: a RevocationReason value
        4: uint,             ; revoked_at, POSIX seconds
    }

Every other key, type, size or value is refused: the parser raises only
``VerifierError(MALFORMED)`` or ``VerifierError(REVOCATION_LIST_BAD_SIGNATURE)``, and checks
the signature before it looks inside the payload.

Installing and enforcing a list is :mod:`verifier.revocation.enforce`; issuing the next one
is :mod:`verifier.revocation.issue`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import nacl.exceptions
import nacl.signing

from verifier.errors import Reason, VerifierError

__all__ = [
    "FORMAT_VERSION",
    "MAX_LIST_BYTES",
    "EntryKind",
    "RevocationEntry",
    "RevocationList",
    "RevocationReason",
    "decode_unverified",
    "parse_revocation_list",
    "sign_revocation_list",
]

FORMAT_VERSION = 1
#: Refuse anything larger before decoding: a list is ids and short strings.
MAX_LIST_BYTES = 16 * 1024 * 1024
_COSE_SIGN1_TAG = 18
_PROTECTED = b"\xa1\x01\x27"  # canonical CBOR of {1: -8}: alg = EdDSA
_HDR_KID = 4
_MAX_KID = 64
_MAX_UINT = 2**63 - 1  # what SQLite (and most peers) can store as a serial or a time
_MAX_ID_BYTES = 1023  # WebAuthn's limit for a credential id
_MAX_TEXT = 256


class RevocationReason(enum.StrEnum):
    """Why an entry is revoked; modelled on FIDO MDS ``AuthenticatorStatus`` values."""

    #: The authenticator, key or model must not be trusted any more (MDS ``REVOKED``).
    REVOKED = "revoked"
    #: User verification can be bypassed, e.g. a liveness spoof works on this model or SDK.
    USER_VERIFICATION_BYPASS = "user_verification_bypass"
    #: The attestation / device key leaked.
    ATTESTATION_KEY_COMPROMISE = "attestation_key_compromise"
    #: Credential keys can be extracted remotely (software weakness).
    USER_KEY_REMOTE_COMPROMISE = "user_key_remote_compromise"
    #: Credential keys can be extracted with physical access.
    USER_KEY_PHYSICAL_COMPROMISE = "user_key_physical_compromise"
    #: The user (or the RP on their behalf) withdrew the credential: lost or stolen device,
    #: account closure, re-enrolment elsewhere. No weakness implied.
    USER_REQUESTED = "user_requested"


class EntryKind(enum.StrEnum):
    CREDENTIAL_ID = "credential_id"
    DEVICE_KEY = "device_key"  # the per-RP device identifier bytes
    MODEL_ID = "model_id"
    SDK_VERSION = "sdk_version"


_BYTES_KINDS = frozenset({EntryKind.CREDENTIAL_ID, EntryKind.DEVICE_KEY})


@dataclass(frozen=True)
class RevocationEntry:
    kind: EntryKind
    value: bytes | str
    reason: RevocationReason
    revoked_at: int


@dataclass(frozen=True)
class RevocationList:
    issuer: str
    serial: int
    this_update: int
    next_update: int
    entries: tuple[RevocationEntry, ...]


# -- validation shared by signing and parsing ---------------------------------------------


def _bad(message: str) -> VerifierError:
    return VerifierError(Reason.MALFORMED, message)


def _uint(name: str, value: object) -> int:
    # type() rather than isinstance(): CBOR true must not pass for 1.
    if type(value) is not int or not 0 <= value <= _MAX_UINT:
        raise _bad(f"{name} must be an integer in [0, 2**63)")
    return value


def _text(name: str, value: object) -> str:
    if type(value) is not str or not 1 <= len(value) <= _MAX_TEXT:
        raise _bad(f"{name} must be text of 1..{_MAX_TEXT} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad(f"{name} is not valid Unicode") from exc
    return value


def _entry_value(kind: EntryKind, value: object) -> bytes | str:
    if kind in _BYTES_KINDS:
        if type(value) is not bytes or not 1 <= len(value) <= _MAX_ID_BYTES:
            raise _bad(f"{kind.value} value must be 1..{_MAX_ID_BYTES} bytes")
        return value
    return _text(f"{kind.value} value", value)


def _validate(rl: object) -> RevocationList:
    if not isinstance(rl, RevocationList):
        raise _bad("expected a RevocationList")
    _text("issuer", rl.issuer)
    _uint("serial", rl.serial)
    _uint("this_update", rl.this_update)
    _uint("next_update", rl.next_update)
    if rl.next_update <= rl.this_update:
        raise _bad("next_update must be later than this_update")
    if not isinstance(rl.entries, tuple):
        raise _bad("entries must be a tuple")
    seen: set[tuple[str, bytes | str]] = set()
    for entry in rl.entries:
        if not isinstance(entry, RevocationEntry):
            raise _bad("entries must be RevocationEntry values")
        if not isinstance(entry.kind, EntryKind) or not isinstance(entry.reason, RevocationReason):
            raise _bad("entry kind and reason must be EntryKind and RevocationReason")
        _entry_value(entry.kind, entry.value)
        _uint("revoked_at", entry.revoked_at)
        key = (entry.kind.value, entry.value)
        if key in seen:
            raise _bad(f"duplicate {entry.kind.value} entry")
        seen.add(key)
    return rl


def _payload_obj(rl: RevocationList) -> dict[int, Any]:
    return {
        1: FORMAT_VERSION,
        2: rl.issuer,
        3: rl.serial,
        4: rl.this_update,
        5: rl.next_update,
        6: [{1: e.kind.value, 2: e.value, 3: e.reason.value, 4: e.revoked_at} for e in rl.entries],
    }


def _dumps(obj: object) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return _dumps(["Signature1", protected, b"", payload])


# -- signing ------------------------------------------------------------------------------


def sign_revocation_list(
    rl: RevocationList, signing_key: nacl.signing.SigningKey, *, kid: bytes | None = None
) -> bytes:
    """Encode ``rl`` canonically and sign it as COSE_Sign1 / EdDSA. ``kid`` (optional, in the
    unprotected header) only helps a reader pick the key; it is not trusted."""
    _validate(rl)
    if not isinstance(signing_key, nacl.signing.SigningKey):
        raise _bad("signing_key must be a nacl.signing.SigningKey")
    if kid is not None and (type(kid) is not bytes or not 1 <= len(kid) <= _MAX_KID):
        raise _bad(f"kid must be 1..{_MAX_KID} bytes")
    payload = _dumps(_payload_obj(rl))
    signature = signing_key.sign(_sig_structure(_PROTECTED, payload)).signature
    unprotected: dict[int, bytes] = {} if kid is None else {_HDR_KID: kid}
    return _dumps(cbor2.CBORTag(_COSE_SIGN1_TAG, [_PROTECTED, unprotected, payload, signature]))


# -- parsing ------------------------------------------------------------------------------


def _strict_loads(data: bytes, what: str) -> Any:
    try:
        obj = cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False, max_depth=8)
        canonical = _dumps(obj)
    except Exception as exc:  # cbor2 raises many types on hostile input; all mean "malformed"
        raise _bad(f"{what} is not valid CBOR ({type(exc).__name__})") from exc
    if canonical != data:
        raise _bad(f"{what} is not canonical CBOR")
    return obj


def _split_cose_sign1(data: object) -> tuple[bytes, bytes, bytes]:
    """Structure checks on the envelope; returns (protected, payload, signature)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _bad("revocation list must be bytes")
    data = bytes(data)
    if not data or len(data) > MAX_LIST_BYTES:
        raise _bad(f"revocation list must be 1..{MAX_LIST_BYTES} bytes")
    obj = _strict_loads(data, "revocation list")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != _COSE_SIGN1_TAG:
        raise _bad("not a COSE_Sign1 message (tag 18)")
    body = obj.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        raise _bad("COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = body
    if type(protected) is not bytes or protected != _PROTECTED:
        raise _bad("protected header must be exactly {1: -8} (EdDSA)")
    if not isinstance(unprotected, Mapping) or not set(unprotected) <= {_HDR_KID}:
        raise _bad("unprotected header may hold only a kid")
    kid = unprotected.get(_HDR_KID)
    if kid is not None and (type(kid) is not bytes or not 1 <= len(kid) <= _MAX_KID):
        raise _bad("kid must be 1..64 bytes")
    if type(payload) is not bytes:
        raise _bad("payload must be an attached byte string")
    if type(signature) is not bytes or len(signature) != 64:
        raise _bad("signature must be 64 bytes")
    return protected, payload, signature


def _field(obj: Mapping[Any, Any], keys: Sequence[int], what: str) -> None:
    if set(obj) != set(keys):
        raise _bad(f"{what} must have exactly the keys {sorted(keys)}")


def _decode_payload(payload: bytes) -> RevocationList:
    obj = _strict_loads(payload, "revocation list payload")
    if not isinstance(obj, Mapping):
        raise _bad("payload must be a map")
    _field(obj, (1, 2, 3, 4, 5, 6), "payload")
    if _uint("format version", obj[1]) != FORMAT_VERSION:
        raise _bad(f"unsupported revocation list format version {obj[1]}")
    raw_entries = obj[6]
    if not isinstance(raw_entries, list | tuple):
        raise _bad("entries must be an array")
    entries: list[RevocationEntry] = []
    for raw in raw_entries:
        if not isinstance(raw, Mapping):
            raise _bad("entry must be a map")
        _field(raw, (1, 2, 3, 4), "entry")
        if type(raw[1]) is not str or type(raw[3]) is not str:
            raise _bad("entry kind and reason must be text")
        try:
            kind = EntryKind(raw[1])
            reason = RevocationReason(raw[3])
        except ValueError as exc:
            raise _bad("unknown entry kind or reason") from exc
        entries.append(
            RevocationEntry(
                kind=kind,
                value=_entry_value(kind, raw[2]),
                reason=reason,
                revoked_at=_uint("revoked_at", raw[4]),
            )
        )
    rl = RevocationList(
        issuer=_text("issuer", obj[2]),
        serial=_uint("serial", obj[3]),
        this_update=_uint("this_update", obj[4]),
        next_update=_uint("next_update", obj[5]),
        entries=tuple(entries),
    )
    _validate(rl)
    # Backstop for anything the field checks missed: one list, one encoding.
    if _dumps(_payload_obj(rl)) != payload:
        raise _bad("payload does not re-encode identically")
    return rl


def parse_revocation_list(data: bytes, issuer_key: nacl.signing.VerifyKey) -> RevocationList:
    """Verify and decode a signed list. Raises only ``VerifierError`` with ``MALFORMED`` or
    ``REVOCATION_LIST_BAD_SIGNATURE``; the payload is decoded only after the signature holds."""
    if not isinstance(issuer_key, nacl.signing.VerifyKey):
        raise _bad("issuer_key must be a nacl.signing.VerifyKey")
    protected, payload, signature = _split_cose_sign1(data)
    try:
        issuer_key.verify(_sig_structure(protected, payload), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise VerifierError(
            Reason.REVOCATION_LIST_BAD_SIGNATURE, "revocation list signature does not verify"
        ) from exc
    except Exception as exc:  # e.g. libsodium refusing an odd input: still not a valid list
        raise VerifierError(
            Reason.REVOCATION_LIST_BAD_SIGNATURE, f"signature check failed ({type(exc).__name__})"
        ) from exc
    return _decode_payload(payload)


def decode_unverified(data: bytes) -> RevocationList:
    """Decode WITHOUT checking the signature: for showing a list to people (``verifier
    inspect``, ``verifier revocation show`` without a key) only, never for a decision."""
    _, payload, _ = _split_cose_sign1(data)
    return _decode_payload(payload)
