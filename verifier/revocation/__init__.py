"""Signed revocation lists: the wire format (:mod:`.codec`), installing and enforcing
(:mod:`.enforce`) and issuing the next list (:mod:`.issue`, the one publisher).

The names below are the package's public surface; ``from verifier.revocation import ...``
keeps working for every name the single-module version had.
"""

from __future__ import annotations

from verifier.views import revocation_list_to_json

from .codec import (
    FORMAT_VERSION,
    MAX_LIST_BYTES,
    EntryKind,
    RevocationEntry,
    RevocationList,
    RevocationReason,
    parse_revocation_list,
    sign_revocation_list,
)
from .enforce import check_not_revoked, install_revocation_list
from .issue import ListIssuer, Publication, RetryPolicy, publish

__all__ = [
    "FORMAT_VERSION",
    "MAX_LIST_BYTES",
    "EntryKind",
    "ListIssuer",
    "Publication",
    "RetryPolicy",
    "RevocationEntry",
    "RevocationList",
    "RevocationReason",
    "check_not_revoked",
    "install_revocation_list",
    "parse_revocation_list",
    "publish",
    "revocation_list_to_json",
    "sign_revocation_list",
]
