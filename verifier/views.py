"""What the relying party shows people and programs: results as JSON, decisions in words,
and the text forms of ids that operators paste back in.

One copy, used by the ``verifier`` command line (``--json``) and the HTTP service, so the two
cannot drift: a field added here appears in both. Nothing here decides anything; every
function only renders (or reads back) what the verifier already decided.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import TYPE_CHECKING, Any

from devicebio.protocol import LivenessClaim, Method, ProtocolError, b64url_decode, b64url_encode
from verifier.errors import Reason, VerifierError
from verifier.policy import Assurance, Policy

if TYPE_CHECKING:
    # Annotations only: verifier.revocation re-exports revocation_list_to_json from here, and
    # the verifiers below import verifier.revocation, so a run-time import would be a circle.
    from verifier.assertion import VerifiedAssertion
    from verifier.challenges import Challenge
    from verifier.registration import VerifiedRegistration
    from verifier.revocation.codec import RevocationList
    from verifier.store import PaymentRecord

__all__ = [
    "accepted_decision",
    "assertion_json",
    "b64url_text",
    "challenge_json",
    "liveness_json",
    "policy_json",
    "receipt_json",
    "refused_decision",
    "registration_json",
    "revocation_list_to_json",
    "utc",
]

#: Longer than any id we read back (a 1023-byte credential id is 1364 characters).
_MAX_B64URL_TEXT = 2048


# -- text forms ---------------------------------------------------------------------------


def utc(seconds: float) -> str | None:
    """ISO 8601 UTC to the second (``2026-11-22T00:00:00Z``), or ``None`` outside the
    calendar's range (a hostile list may carry any 63-bit time)."""
    try:
        whole = math.floor(seconds)
        return _dt.datetime.fromtimestamp(whole, _dt.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def b64url_text(text: object, what: str) -> bytes:
    """Read back an id or challenge that a person or client sent as base64url.

    Padding is tolerated (people paste from tools that add it); everything else is the
    protocol's strict decoder, so one value still has one accepted spelling.
    Raises ``VerifierError(MALFORMED)`` naming ``what``.
    """
    if not isinstance(text, str) or not 1 <= len(text) <= _MAX_B64URL_TEXT:
        raise VerifierError(Reason.MALFORMED, f"{what} must be base64url text")
    cleaned = text.rstrip("=")
    try:
        value = b64url_decode(cleaned) if cleaned else b""
    except ProtocolError as exc:
        raise VerifierError(Reason.MALFORMED, f"{what} must be base64url text") from exc
    if not value:
        raise VerifierError(Reason.MALFORMED, f"{what} must be base64url text")
    return value


# -- results ------------------------------------------------------------------------------


def liveness_json(liveness: LivenessClaim) -> dict[str, Any]:
    return {
        "kind": liveness.kind,
        "passed": liveness.passed,
        "frames": liveness.frames,
        "sequence_hash": None if liveness.sequence_hash is None else liveness.sequence_hash.hex(),
    }


#: Rendered policies by id (the policy is kept, so its id cannot be reused): a server renders
#: its one or two policies into every answer, and building the view costs more than a copy.
_POLICY_VIEWS: dict[int, tuple[Policy, dict[str, Any]]] = {}
_STRONG_OPTIONS: dict[int, tuple[Policy, tuple[str, ...]]] = {}
_MAX_CACHED = 64


def policy_json(policy: Policy) -> dict[str, Any]:
    entry = _POLICY_VIEWS.get(id(policy))
    if entry is None or entry[0] is not policy:
        entry = (policy, _policy_view(policy))
        if len(_POLICY_VIEWS) < _MAX_CACHED:
            _POLICY_VIEWS[id(policy)] = entry
    view = entry[1]
    # A fresh copy of every mutable level: callers may change what they are given.
    assurance = view["assurance"]
    return {
        **view,
        "accepted_methods": list(view["accepted_methods"]),
        "assurance": {**assurance, "face_with_liveness": dict(assurance["face_with_liveness"])},
    }


def _policy_view(policy: Policy) -> dict[str, Any]:
    return {
        "accepted_methods": sorted(m.value for m in policy.accepted_methods),
        "require_user_verification": policy.require_user_verification,
        "require_liveness": policy.require_liveness,
        "assurance": {
            "face_with_liveness": {k: a.value for k, a in policy.face_with_liveness},
            "face_without_liveness": policy.face_without_liveness.value,
            "pin": policy.pin.value,
            "security_key": policy.security_key.value,
            "recovery": policy.recovery.value,
        },
    }


def challenge_json(challenge: Challenge) -> dict[str, Any]:
    return {
        "challenge": b64url_encode(challenge.value),
        "user": challenge.user,
        "purpose": challenge.purpose.value,
        "expires_at": challenge.expires_at,
        "expires_at_utc": utc(challenge.expires_at),
    }


def registration_json(result: VerifiedRegistration) -> dict[str, Any]:
    return {
        "credential_id": b64url_encode(result.credential_id),
        "user": result.user,
        "device_id": None if result.device_id is None else result.device_id.hex(),
        "aaguid": result.aaguid.hex(),
        "method": result.method.value,
        "assurance": result.assurance.value,
        "liveness": liveness_json(result.liveness),
        "model": result.model,
        "user_verified": result.user_verified,
    }


def assertion_json(
    result: VerifiedAssertion, policy: Policy, *, revocation_checked: bool
) -> dict[str, Any]:
    """The RP's decision on one assertion: what was proven, what this policy grants for it,
    and whether the caller must step up or re-enrol."""
    return {
        "decision": accepted_decision(result, policy),
        "user": result.user,
        "credential_id": b64url_encode(result.credential_id),
        "method": result.method.value,
        "assurance": result.assurance.value,
        "step_up_required": result.assurance is not Assurance.STRONG,
        "re_enrol_required": result.re_enrol_required,
        "liveness": liveness_json(result.liveness),
        "model": result.model,
        "sdk_version": result.sdk_version,
        "sign_count": result.new_sign_count,
        "user_verified": result.user_verified,
        "revocation_checked": revocation_checked,
        "policy": policy_json(policy),
    }


# -- decisions in words -------------------------------------------------------------------


def _how(method: Method, liveness: LivenessClaim) -> str:
    if method is Method.FACE:
        return f"face with liveness ({liveness.kind})" if liveness.passed else "face, no liveness"
    if method is Method.PIN:
        return "PIN only"
    if method is Method.SECURITY_KEY:
        return "security key"
    return "recovery code"


def _strong_options(policy: Policy) -> tuple[str, ...]:
    entry = _STRONG_OPTIONS.get(id(policy))
    if entry is None or entry[0] is not policy:
        entry = (policy, _find_strong_options(policy))
        if len(_STRONG_OPTIONS) < _MAX_CACHED:
            _STRONG_OPTIONS[id(policy)] = entry
    return entry[1]


def _find_strong_options(policy: Policy) -> tuple[str, ...]:
    options: list[tuple[Method, Assurance, str]] = [
        (Method.FACE, a, f"face with liveness ({kind})") for kind, a in policy.face_with_liveness
    ]
    options += [
        (Method.SECURITY_KEY, policy.security_key, "a security key"),
        (Method.PIN, policy.pin, "PIN"),
    ]
    if not policy.require_liveness:
        options.insert(1, (Method.FACE, policy.face_without_liveness, "face"))
    return tuple(
        name
        for method, assurance, name in options
        if assurance is Assurance.STRONG and method in policy.accepted_methods
    )


def accepted_decision(result: VerifiedAssertion, policy: Policy) -> str:
    how = _how(result.method, result.liveness)
    assurance = result.assurance
    if assurance is Assurance.STRONG:
        return f"accepted: {how} = strong"
    if assurance is Assurance.RECOVERY:
        return (
            f"accepted for recovery only: {how} = recovery; re-enrol the user's face and "
            "credential before anything else"
        )
    if assurance is Assurance.NONE:
        return "accepted with no assurance: user present but not verified; allow no sign-in"
    options = _strong_options(policy)
    step_up = (
        f"step up ({' or '.join(options)}) before payments or account changes"
        if options
        else "no method earns strong assurance under this policy"
    )
    return f"accepted with reduced assurance: {how} = {assurance.value}; {step_up}"


_EXPLAIN = {
    Reason.REVOKED: "the credential, its device or its model is on the revocation list",
    Reason.CHALLENGE_REUSED: "the challenge was already used (replay)",
    Reason.CHALLENGE_EXPIRED: "the challenge expired; ask for a new one",
    Reason.CHALLENGE_UNKNOWN: "this verifier never issued that challenge",
    Reason.COUNTER_REGRESSION: "the signature counter went backwards (possible cloned key)",
    Reason.POLICY_METHOD_REFUSED: "this RP does not accept that method",
    Reason.POLICY_LIVENESS_REQUIRED: "face without passed liveness; liveness is required",
    Reason.CREDENTIAL_UNKNOWN: "no such registered credential",
    Reason.BAD_SIGNATURE: "the signature does not verify",
    Reason.REVOCATION_LIST_STALE: "the revocation list in force is out of date (fail closed)",
    Reason.REVOCATION_LIST_MISSING: "no revocation list is installed (fail closed)",
    Reason.STORAGE: "the verifier cannot reach its storage (fail closed)",
}


def refused_decision(reason: str, message: str) -> str:
    try:
        why = _EXPLAIN.get(Reason(reason), message)
    except ValueError:
        why = message
    return f"refused: {reason}" + (f" ({why})" if why else "")


# -- payments -----------------------------------------------------------------------------


def receipt_json(record: PaymentRecord) -> dict[str, Any]:
    """A merchant's receipt of an authorised payment: the decision, never anything biometric.
    ``audit_id`` is the key of the ``payment_authorised`` event in the audit trail."""
    signed = json.loads(record.payment)
    return {
        "audit_id": record.payment_id,
        "payee": signed.get("payeeName") or signed.get("payeeOrigin"),
        "amount": signed["total"]["value"],
        "currency": record.currency,
        "instrument": signed["instrument"]["displayName"],
        "user": record.user,
        "credential_id": b64url_encode(record.credential_id),
        "method": record.method,
        "assurance": record.assurance,
        "sign_count": record.sign_count,
        "authorised_at": utc(record.authorised_at),
    }


# -- revocation lists ---------------------------------------------------------------------


def revocation_list_to_json(rl: RevocationList) -> dict[str, Any]:
    """A JSON-ready view: credential ids in base64url, device keys in hex, times as both
    POSIX seconds and ISO 8601 UTC (``None`` when out of the calendar's range)."""
    from verifier.revocation.codec import FORMAT_VERSION, EntryKind  # see the note at the top

    entries = []
    for e in rl.entries:
        if e.kind is EntryKind.CREDENTIAL_ID and isinstance(e.value, bytes):
            value, encoding = b64url_encode(e.value), "base64url"
        elif isinstance(e.value, bytes):
            value, encoding = e.value.hex(), "hex"
        else:
            value, encoding = e.value, "text"
        entries.append(
            {
                "kind": e.kind.value,
                "value": value,
                "value_encoding": encoding,
                "reason": e.reason.value,
                "revoked_at": e.revoked_at,
                "revoked_at_utc": utc(e.revoked_at),
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "issuer": rl.issuer,
        "serial": rl.serial,
        "this_update": rl.this_update,
        "this_update_utc": utc(rl.this_update),
        "next_update": rl.next_update,
        "next_update_utc": utc(rl.next_update),
        "entries": entries,
    }
