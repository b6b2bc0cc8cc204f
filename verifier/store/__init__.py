"""The verifier's state: see :mod:`verifier.store.sqlite`."""

from .sqlite import SCHEMA_VERSION, CredentialRecord, Durability, SQLiteStore, Store

__all__ = ["SCHEMA_VERSION", "CredentialRecord", "Durability", "SQLiteStore", "Store"]
