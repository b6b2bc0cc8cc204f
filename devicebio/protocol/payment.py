"""A payment the user approved, in the W3C Secure Payment Confirmation (SPC) shape.

An SPC assertion is an ordinary WebAuthn assertion whose clientDataJSON has ``type``
``"payment.get"`` and one more member, ``payment`` (SPC's ``CollectedClientAdditionalPaymentData``),
so the signature over ``authenticatorData || SHA-256(clientDataJSON)`` covers the transaction
the user was shown. Its JSON form (CDDL; devicebio's profile is stricter than SPC, see
docs/protocol.md)::

    payment = {
      "rpId": tstr,                ; the RP id the credential belongs to
      "topOrigin": origin,         ; the top-level page that asked (the till)
      ? "payeeName": name,         ; at least one of payeeName / payeeOrigin
      ? "payeeOrigin": origin,
      "total": { "currency": tstr .regexp "[A-Z]{3}",          ; ISO 4217 alphabetic
                 "value": tstr .regexp "(0|[1-9][0-9]{0,11})(\\.[0-9]{1,6})?" },
      "instrument": { "displayName": name, "icon": tstr },     ; icon: https: or data:image/ URL
    }
    origin = tstr .regexp "https://[a-z0-9.-]+(:[0-9]{1,5})?"  ; scheme and host only
    name   = tstr .size (1..256)   ; no control characters

Amounts are decimal *strings*, never floats: the value the user saw is the value compared,
character for character. ``Amount.micros`` gives the integer number of millionths of the
currency unit, which is what limits and daily totals add up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fido2.webauthn import CollectedClientData

from devicebio.protocol.encoding import exact_map, invalid, json_loads, malformed, strict, typed
from devicebio.protocol.errors import ProtocolError, ProtocolReason

__all__ = [
    "PAYMENT_TYPE",
    "Amount",
    "Instrument",
    "PaymentDetails",
    "client_payment",
    "payment_client_data",
]

#: clientDataJSON.type of an SPC authentication (WebAuthn's sign-in is "webauthn.get").
PAYMENT_TYPE = "payment.get"

# SPC takes PaymentCurrencyAmount's "valid decimal monetary value" (any number of digits,
# leading zeros allowed). devicebio refuses leading zeros and bounds the digits, so one
# amount has fewer spellings and every amount fits a signed 64-bit count of millionths.
_VALUE_RE = re.compile(r"(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_ORIGIN_RE = re.compile(r"https://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?")
_RP_ID_RE = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MAX_NAME = 256
_MAX_ICON = 2048
_MICROS = Decimal(1_000_000)


def _reworded(exc: ProtocolError) -> ProtocolError:
    # A constructor's INVALID_ARGUMENT becomes MALFORMED_DATA when the value came off the wire.
    return ProtocolError(ProtocolReason.MALFORMED_DATA, exc.detail)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= _MAX_NAME:
        invalid(f"{what} must be a string of 1..{_MAX_NAME} characters")
    if value != value.strip() or _CONTROL_RE.search(value):
        # What the user reads must be what is signed: no invisible or layout characters.
        invalid(f"{what} has control characters or outer spaces")
    return value


def _origin(value: object, what: str) -> str:
    if not isinstance(value, str) or _ORIGIN_RE.fullmatch(value) is None:
        invalid(f"{what} must be an https origin (scheme and lower-case host only)")
    return value


@dataclass(frozen=True)
class Amount:
    """SPC's ``total``: an ISO 4217 alphabetic currency and a decimal string, e.g. ``"2.50"``."""

    currency: str
    value: str

    def __post_init__(self) -> None:
        if not isinstance(self.currency, str) or _CURRENCY_RE.fullmatch(self.currency) is None:
            invalid("currency must be three upper-case letters (ISO 4217)")
        if not isinstance(self.value, str) or _VALUE_RE.fullmatch(self.value) is None:
            invalid("value must be a decimal string like 2.50 (no sign, no leading zeros)")

    @property
    def micros(self) -> int:
        """The amount in millionths of the currency unit (exact: at most 6 decimals)."""
        return int(Decimal(self.value) * _MICROS)

    def to_json(self) -> dict[str, str]:
        return {"currency": self.currency, "value": self.value}

    def __str__(self) -> str:
        return f"{self.value} {self.currency}"


@dataclass(frozen=True)
class Instrument:
    """SPC's ``instrument``: what the user pays with, as shown (name and icon URL)."""

    display_name: str
    icon: str

    def __post_init__(self) -> None:
        _name(self.display_name, "instrument.displayName")
        icon = self.icon
        if not isinstance(icon, str) or not 1 <= len(icon) <= _MAX_ICON:
            invalid(f"instrument.icon must be a URL of 1..{_MAX_ICON} characters")
        if not (icon.startswith(("https://", "data:image/"))) or _CONTROL_RE.search(icon):
            invalid("instrument.icon must be an https: or data:image/ URL")

    def to_json(self) -> dict[str, str]:
        return {"displayName": self.display_name, "icon": self.icon}


@dataclass(frozen=True)
class PaymentDetails:
    """The transaction, exactly as the user is shown it and the signature covers it."""

    rp_id: str
    top_origin: str
    total: Amount
    instrument: Instrument
    payee_name: str | None = None
    payee_origin: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rp_id, str) or _RP_ID_RE.fullmatch(self.rp_id) is None:
            invalid("rpId must be a lower-case host name")
        _origin(self.top_origin, "topOrigin")
        if not isinstance(self.total, Amount) or not isinstance(self.instrument, Instrument):
            invalid("total must be an Amount and instrument an Instrument")
        if self.payee_name is None and self.payee_origin is None:
            invalid("name the payee: payeeName, payeeOrigin or both")
        if self.payee_name is not None:
            _name(self.payee_name, "payeeName")
        if self.payee_origin is not None:
            _origin(self.payee_origin, "payeeOrigin")

    def to_json(self) -> dict[str, Any]:
        """The ``payment`` member of clientDataJSON (SPC member names; absent payee omitted)."""
        out: dict[str, Any] = {"rpId": self.rp_id, "topOrigin": self.top_origin}
        if self.payee_name is not None:
            out["payeeName"] = self.payee_name
        if self.payee_origin is not None:
            out["payeeOrigin"] = self.payee_origin
        out["total"] = self.total.to_json()
        out["instrument"] = self.instrument.to_json()
        return out

    @classmethod
    @strict
    def from_json(cls, obj: object) -> PaymentDetails:
        """Strictly parse a ``payment`` member (unknown or missing members are refused)."""
        f = exact_map(
            obj,
            required={"rpId", "topOrigin", "total", "instrument"},
            optional={"payeeName", "payeeOrigin"},
            what="payment",
        )
        total = exact_map(f["total"], required={"currency", "value"}, optional=set(), what="total")
        instrument = exact_map(
            f["instrument"], required={"displayName", "icon"}, optional=set(), what="instrument"
        )
        try:
            return cls(
                rp_id=typed(f["rpId"], str, "rpId"),
                top_origin=typed(f["topOrigin"], str, "topOrigin"),
                total=Amount(
                    currency=typed(total["currency"], str, "currency"),
                    value=typed(total["value"], str, "value"),
                ),
                instrument=Instrument(
                    display_name=typed(instrument["displayName"], str, "displayName"),
                    icon=typed(instrument["icon"], str, "icon"),
                ),
                payee_name=None if "payeeName" not in f else typed(f["payeeName"], str, "name"),
                payee_origin=(
                    None if "payeeOrigin" not in f else typed(f["payeeOrigin"], str, "origin")
                ),
            )
        except ProtocolError as exc:
            raise _reworded(exc) from None

    def lines(self) -> list[str]:
        """What a device shows before it asks for the face: one fact per line."""
        origin = None if self.payee_origin is None else f"({self.payee_origin})"
        payee = " ".join(p for p in (self.payee_name, origin) if p)
        return [
            f"pay {self.total} to {payee}",
            f"with {self.instrument.display_name}",
            f"requested by {self.top_origin} for {self.rp_id}",
        ]


def payment_client_data(*, challenge: bytes, origin: str, payment: PaymentDetails) -> bytes:
    """clientDataJSON of an SPC authentication: WebAuthn's members, type ``payment.get`` and
    the ``payment`` member (python-fido2 writes it, as for every other devicebio ceremony)."""
    if not isinstance(payment, PaymentDetails):
        invalid("payment must be a PaymentDetails")
    return bytes(
        CollectedClientData.create(
            type=PAYMENT_TYPE, challenge=challenge, origin=origin, payment=payment.to_json()
        )
    )


@strict
def client_payment(client_data: CollectedClientData) -> PaymentDetails | None:
    """The signed ``payment`` member of a parsed clientDataJSON, or None when it has none.

    A ``payment.get`` without the member, or a member under any other type, is MALFORMED:
    a transaction is either bound to the type that says so or not there at all.
    """
    data = json_loads(bytes(client_data), "clientDataJSON")  # exactly the received bytes
    present = isinstance(data, dict) and "payment" in data
    if client_data.type == PAYMENT_TYPE:
        if not present:
            malformed("payment.get clientDataJSON lacks the payment member")
        return PaymentDetails.from_json(data["payment"])
    if present:
        malformed("a payment member outside payment.get clientDataJSON")
    return None
