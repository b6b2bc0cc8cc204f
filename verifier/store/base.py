"""What every store shares: the ``Store`` interface, the credential record, the schema
version, and the argument checks that make each backend refuse the same inputs with the same
typed reason before any SQL runs.

``Store`` is the small interface the rest of the verifier codes against. A backend keeps two
atomicity promises whatever the number of verifier processes sharing its database:

* ``use_challenge`` redeems a challenge with ONE conditional statement, so that of several
  processes racing to redeem it exactly one sees it fresh;
* ``update_sign_count`` is a compare-and-set, so two assertions carrying the same counter
  value cannot both be accepted.

A store may also offer ``atomic()``, a context manager that groups several calls into one
write transaction; the verifier uses it when present, so that one assertion costs one durable
commit instead of one per write. Without it every call commits on its own, which is equally
correct, only slower. Likewise ``use_challenge_and_get_credential(value, credential_id)``:
``use_challenge`` and ``get_credential`` in one statement (see
:func:`use_challenge_and_get_credential`), one round trip fewer per sign-in.

Every driver failure surfaces as ``VerifierError(Reason.STORAGE)``: the verifier fails closed
when it cannot read or write its state. The audit trail holds event names and short fields
(ids, reasons, counters); callers must never pass biometric data to it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from devicebio.protocol import ed25519_public_key_from_cose
from devicebio.protocol.encoding import quick_init
from verifier.errors import Reason, VerifierError, protocol_errors

__all__ = ["SCHEMA_VERSION", "CredentialRecord", "Durability", "PaymentRecord", "Store"]

#: The schema every backend migrates a database to on open (forward only). A database
#: with a higher version was written by a newer verifier and is refused.
#: 1: challenges, credentials, revocation, audit. 2: an index on audit time, for retention.
#: 3: payment requests and authorised payments (receipts, daily totals). 4: an index on
#: challenges by user, for the per-user cap on open challenges.
SCHEMA_VERSION = 4

# Both backends store signed 64-bit integers; anything outside would fail mid-query.
INT_MAX = 2**63 - 1

#: ``"full"``: every commit is durable (fsync'd) before it returns. ``"normal"``: commits
#: survive a crash of the verifier process but not necessarily of the OS or the database
#: server; see each backend.
Durability = Literal["full", "normal"]
DURABILITIES: tuple[Durability, ...] = ("full", "normal")

#: What ``use_challenge`` returns: ``(user, purpose, expires_at, was_already_used)``.
ChallengeRow = tuple[str, str, float, bool]


@quick_init  # built on every verification: see quick_init
@dataclass(frozen=True)
class CredentialRecord:
    """A registered device credential, as the verifier keeps it."""

    credential_id: bytes
    user: str
    user_handle: bytes
    rp_id: str
    public_key: bytes  # COSE_Key, CBOR bytes exactly as registered
    sign_count: int
    device_id: bytes | None
    created_at: float

    @property
    def ed25519_public_key(self) -> bytes:
        """The raw 32-byte Ed25519 key of ``public_key``; raises
        ``VerifierError(MALFORMED)`` if the stored COSE_Key is not exactly OKP/Ed25519/EdDSA
        in canonical CBOR."""
        with protocol_errors():
            return _ed25519_key(self.public_key)


@dataclass(frozen=True)
class PaymentRecord:
    """An authorised payment, as the verifier records it (the receipt's content).

    ``payment`` is the signed ``payment`` member's JSON; ``amount_micros`` its total in
    millionths of ``currency``, what daily totals add up."""

    payment_id: str
    user: str
    credential_id: bytes
    currency: str
    amount_micros: int
    payment: bytes
    method: str
    assurance: str
    sign_count: int
    authorised_at: float


@functools.lru_cache(maxsize=1024)
def _ed25519_key(cose_key: bytes) -> bytes:
    # Decoding and re-encoding the COSE_Key to prove it canonical costs more than the
    # signature check's bookkeeping; the result depends on the bytes alone, so a cache keyed
    # by the exact bytes cannot hand one credential another's key. Failures are not cached.
    return ed25519_public_key_from_cose(cose_key)


@runtime_checkable
class Store(Protocol):
    """What the verifier needs from its storage. Implementations raise only ``VerifierError``."""

    def insert_challenge(self, value: bytes, user: str, purpose: str, expires_at: float) -> None:
        """Remember a freshly issued challenge (unused)."""
        ...

    def use_challenge(self, value: bytes) -> ChallengeRow | None:
        """Atomically mark ``value`` used.

        Returns ``(user, purpose, expires_at, was_already_used)``, or ``None`` if unknown.
        """
        ...

    def purge_expired_challenges(self, now: float) -> int:
        """Delete challenges that expired before ``now``; returns how many went."""
        ...

    def count_open_challenges(self, user: str, now: float) -> int:
        """How many of ``user``'s challenges are unused and not expired at ``now``."""
        ...

    def add_credential(self, rec: CredentialRecord, *, first_for_user: bool = False) -> None:
        """Store a new credential; ``VerifierError(CREDENTIAL_EXISTS)`` if the id is taken.

        ``first_for_user``: in the same atomic step, refuse with ``USER_ALREADY_REGISTERED``
        when ``rec.user`` already has a credential (two racing registrations for one new
        user: exactly one wins)."""
        ...

    def get_credential(self, credential_id: bytes) -> CredentialRecord | None: ...

    def update_sign_count(self, credential_id: bytes, old: int, new: int) -> bool:
        """Set the counter to ``new`` only if it is still ``old``; ``False`` if it was not."""
        ...

    def credentials_for_user(self, user: str) -> list[CredentialRecord]: ...

    def get_revocation_state(self) -> tuple[int, bytes] | None:
        """``(highest serial seen, list bytes in force)``, or ``None`` before the first list."""
        ...

    def set_revocation_state(self, serial: int, data: bytes) -> None:
        """Install a list. Refuses (``REVOCATION_LIST_ROLLBACK``) a lower serial than stored,
        or the same serial with different bytes, atomically against concurrent installers."""
        ...

    def audit(self, event: str, **fields: str | int | float | bool | None) -> None:
        """Append an audit event. Never pass images, templates, embeddings or scores."""
        ...

    def add_payment_request(
        self, request_id: str, challenge: bytes, user: str, payment: bytes, created_at: float
    ) -> None:
        """Remember what a merchant asked ``user`` to approve, under ``challenge``."""
        ...

    def get_payment_request(self, request_id: str) -> tuple[bytes, str, bytes, float] | None:
        """``(challenge, user, payment JSON, created_at)`` of a request, or ``None``."""
        ...

    def add_payment(self, rec: PaymentRecord, *, limit: int | None, since: float) -> int | None:
        """Record ``rec`` unless the user's total in its currency authorised at or after
        ``since``, plus ``rec.amount_micros``, would pass ``limit`` (``None``: no limit).
        Returns the new total, or ``None`` (nothing written) when over the limit. Atomic
        against concurrent adds for the same user, so two tills cannot both squeeze under it.
        """
        ...

    def payment_total(self, user: str, currency: str, since: float) -> int:
        """Sum of ``user``'s authorised amounts in ``currency`` at or after ``since``."""
        ...

    def get_payment(self, payment_id: str) -> PaymentRecord | None: ...


def use_challenge_and_get_credential(
    store: Store, value: bytes, credential_id: bytes
) -> tuple[ChallengeRow | None, CredentialRecord | None]:
    """``(store.use_challenge(value), store.get_credential(credential_id))``, in one statement
    when the backend offers it (both built-in ones do), else as the two calls.

    The redeem keeps its promise either way (one conditional write, exactly one winner); the
    credential is read in the same statement, so a sign-in pays one statement, and on
    PostgreSQL one network round trip, for both. Callers check the challenge before they use
    the record, exactly as if the two calls had been made one after the other.
    """
    combined = getattr(store, "use_challenge_and_get_credential", None)
    if combined is not None:
        return combined(value, credential_id)  # type: ignore[no-any-return]
    return store.use_challenge(value), store.get_credential(credential_id)


def storage_error(exc: BaseException) -> VerifierError:
    return VerifierError(Reason.STORAGE, f"{type(exc).__name__}: {exc}")


def check_durability(durability: object) -> Durability:
    if not isinstance(durability, str) or durability not in DURABILITIES:
        raise VerifierError(Reason.MALFORMED, "durability must be 'full' or 'normal'")
    return "full" if durability == "full" else "normal"


def check_int(name: str, value: object) -> int:
    if type(value) is not int or not 0 <= value <= INT_MAX:
        raise VerifierError(Reason.MALFORMED, f"{name} must be an integer in [0, 2**63)")
    return value


def check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise VerifierError(Reason.MALFORMED, f"{name} must be bytes")
    return bytes(value)


def check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise VerifierError(Reason.MALFORMED, f"{name} must be a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: no database can store them
        raise VerifierError(Reason.MALFORMED, f"{name} is not valid Unicode text") from exc
    if "\x00" in value:  # PostgreSQL text cannot hold NUL; refuse it on every backend alike
        raise VerifierError(Reason.MALFORMED, f"{name} contains a NUL character")
    return value


def check_time(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VerifierError(Reason.MALFORMED, f"{name} must be a number")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise VerifierError(Reason.MALFORMED, f"{name} must be finite")
    return result


def check_record(rec: object) -> tuple[Any, ...]:
    """The checked column values of ``rec``, in ``CREDENTIAL_COLUMNS`` order."""
    if not isinstance(rec, CredentialRecord):
        raise VerifierError(Reason.MALFORMED, "rec must be a CredentialRecord")
    return (
        check_bytes("credential_id", rec.credential_id),
        check_str("user", rec.user),
        check_bytes("user_handle", rec.user_handle),
        check_str("rp_id", rec.rp_id),
        check_bytes("public_key", rec.public_key),
        check_int("sign_count", rec.sign_count),
        None if rec.device_id is None else check_bytes("device_id", rec.device_id),
        check_time("created_at", rec.created_at),
    )


def check_payment_record(rec: object) -> tuple[Any, ...]:
    """The checked column values of ``rec``, in ``PAYMENT_COLUMNS`` order."""
    if not isinstance(rec, PaymentRecord):
        raise VerifierError(Reason.MALFORMED, "rec must be a PaymentRecord")
    return (
        check_str("payment_id", rec.payment_id),
        check_str("user", rec.user),
        check_bytes("credential_id", rec.credential_id),
        check_str("currency", rec.currency),
        check_int("amount_micros", rec.amount_micros),
        check_bytes("payment", rec.payment),
        check_str("method", rec.method),
        check_str("assurance", rec.assurance),
        check_int("sign_count", rec.sign_count),
        check_time("authorised_at", rec.authorised_at),
    )


PAYMENT_COLUMNS = (
    "payment_id, {user}, credential_id, currency, amount_micros, payment, method, assurance,"
    " sign_count, authorised_at"
)


def payment_from_row(row: tuple[Any, ...]) -> PaymentRecord:
    return PaymentRecord(
        payment_id=str(row[0]),
        user=str(row[1]),
        credential_id=bytes(row[2]),
        currency=str(row[3]),
        amount_micros=int(row[4]),
        payment=bytes(row[5]),
        method=str(row[6]),
        assurance=str(row[7]),
        sign_count=int(row[8]),
        authorised_at=float(row[9]),
    )


def over_limit(total: int, amount: int, limit: int | None) -> bool:
    if limit is not None and (type(limit) is not int or limit < 0):
        raise VerifierError(Reason.MALFORMED, "limit must be a non-negative int or None")
    return limit is not None and total + amount > limit


def record_from_row(row: tuple[Any, ...]) -> CredentialRecord:
    """A stored credential row as a record; a row that does not decode (a damaged or
    hand-edited database) is ``STORAGE``, never a stray ``ValueError``."""
    try:
        return CredentialRecord(
            credential_id=bytes(row[0]),
            user=str(row[1]),
            user_handle=bytes(row[2]),
            rp_id=str(row[3]),
            public_key=bytes(row[4]),
            sign_count=int(row[5]),
            device_id=None if row[6] is None else bytes(row[6]),
            created_at=float(row[7]),
        )
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise VerifierError(Reason.STORAGE, "a stored credential record is damaged") from exc


# json.dumps builds a new encoder per call when given options; one shared encoder writes the
# same text (sort_keys, allow_nan=False) without that cost.
_AUDIT_JSON = json.JSONEncoder(sort_keys=True, allow_nan=False).encode
_AUDIT_TYPES = frozenset({str, int, float, bool, type(None)})


def audit_text(event: str, fields: dict[str, Any]) -> tuple[str, str]:
    """``(event, fields as JSON)`` after the checks every backend applies to an audit row."""
    event = check_str("event", event)
    for key, value in fields.items():
        # The exact types first: the usual fields cost one set lookup each.
        if type(value) not in _AUDIT_TYPES and not isinstance(value, str | int | float | bool):
            raise VerifierError(
                Reason.MALFORMED, f"audit field {key!r} must be str, int, float, bool or None"
            )
    try:
        text = _AUDIT_JSON(fields)
    except ValueError as exc:
        raise VerifierError(Reason.MALFORMED, "audit fields must be finite") from exc
    return event, text


def audit_rows(rows: list[tuple[Any, ...]]) -> list[tuple[float, str, dict[str, Any]]]:
    """Decode ``(time, event, fields JSON)`` rows, newest first, into oldest-first events."""
    out: list[tuple[float, str, dict[str, Any]]] = []
    for t, event, text in reversed(rows):
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise VerifierError(Reason.STORAGE, "corrupt audit record") from exc
        out.append((float(t), str(event), fields if isinstance(fields, dict) else {}))
    return out
