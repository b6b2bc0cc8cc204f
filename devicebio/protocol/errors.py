"""The protocol's one error type: what both sides raise when bytes off the wire are bad.

The device SDK and the verifier each translate it at exactly one boundary into their own
error (``DeviceBioError`` / ``VerifierError``), so neither package's callers see it.
"""

from __future__ import annotations

import enum


class ProtocolReason(enum.StrEnum):
    MALFORMED_DATA = "malformed_data"  # bytes received from the other side are not valid
    INVALID_ARGUMENT = "invalid_argument"  # a value built locally breaks the schema
    EXTENSION_INVALID = "extension_invalid"  # well-formed WebAuthn, but a bad devicebio extension


class ProtocolError(Exception):
    """Raised by every parser and builder in :mod:`devicebio.protocol`, and nothing else is."""

    def __init__(self, reason: ProtocolReason, message: str = "") -> None:
        self.reason = reason
        self.detail = message
        super().__init__(f"{reason.value}: {message}" if message else reason.value)
