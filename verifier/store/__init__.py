"""The verifier's state: challenges, credentials, the revocation list in force, an audit trail.

Two backends keep the same :class:`Store` interface and semantics (see
:mod:`verifier.store.base`): :class:`SQLiteStore`, the embedded default, and
:class:`PostgresStore`, a shared PostgreSQL database behind several verifier processes (the
``[postgres]`` extra). :func:`open_store` picks one from a URL. Importing this package never
imports the PostgreSQL driver; only opening a ``postgresql://`` store does.

Beyond ``Store``, both backends offer the same ``atomic()`` (one transaction per block),
``audit_events(limit)``, ``purge_audit(before)`` (retention), ``durability``,
``schema_version`` and ``close()`` (also as a context manager).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.errors import Reason, VerifierError

from .base import SCHEMA_VERSION, CredentialRecord, Durability, PaymentRecord, Store
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "CredentialRecord",
    "Durability",
    "PaymentRecord",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "open_store",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite://"


def __getattr__(name: str) -> Any:
    # PostgresStore on first use only: psycopg is an optional extra.
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    url: str | Path, *, timeout: float = 10.0, durability: Durability = "full"
) -> SQLiteStore | PostgresStore:
    """Open the store ``url`` names.

    * ``postgresql://...`` (or ``postgres://``): :class:`PostgresStore`, any libpq URI;
    * ``sqlite:///relative/path``, ``sqlite:////absolute/path`` (SQLAlchemy's spelling),
      ``sqlite://`` alone for memory: :class:`SQLiteStore`;
    * a plain path, or ``":memory:"``: :class:`SQLiteStore`.

    Any other ``scheme://`` is refused (``MALFORMED``) rather than taken for a file name.
    """
    if isinstance(url, Path):
        return SQLiteStore(url, timeout=timeout, durability=durability)
    if not isinstance(url, str) or not url:
        raise VerifierError(Reason.MALFORMED, "the store URL must be a non-empty str")
    if url.startswith(_POSTGRES_SCHEMES):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise VerifierError(
                Reason.STORAGE, "postgresql:// stores need the [postgres] extra (psycopg)"
            ) from exc
        return PostgresStore(url, timeout=timeout, durability=durability)
    if url.startswith(_SQLITE_SCHEME):
        rest = url[len(_SQLITE_SCHEME) :]
        if rest == "":
            path = ":memory:"
        elif rest.startswith("/") and rest != "/":
            path = rest[1:]
        else:
            raise VerifierError(Reason.MALFORMED, "a SQLite URL is sqlite:///path")
        return SQLiteStore(path, timeout=timeout, durability=durability)
    if "://" in url or url.startswith(("sqlite:", "postgresql:", "postgres:")):
        scheme = url.split(":", 1)[0]
        raise VerifierError(Reason.MALFORMED, f"not a store URL this verifier knows ({scheme}:)")
    return SQLiteStore(url, timeout=timeout, durability=durability)
