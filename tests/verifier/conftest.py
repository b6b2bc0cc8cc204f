from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from verifier.store import open_store

_schemas = itertools.count(1)


@dataclass
class Backend:
    """One store backend under test: ``open()`` returns a new store (a new connection or
    pool) on this test's own database, so several opens act as several verifier processes."""

    name: str
    url: str
    server: Any = None
    opened: list[Any] = field(default_factory=list)

    def open(self, **kw: Any) -> Any:
        store = open_store(self.url, **kw)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def _postgres_backend(server: Any) -> Iterator[Backend]:
    import psycopg

    # A schema per test: a fresh, empty database in all but name, made in milliseconds.
    schema = f"t{next(_schemas)}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    backend = Backend("postgres", server.url(search_path=schema), server)
    try:
        yield backend
    finally:
        backend.close_all()
        with psycopg.connect(server.url(), autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test using it runs twice: on a SQLite file, and on a real PostgreSQL server."""
    if request.param == "sqlite":
        b = Backend("sqlite", f"sqlite:///{tmp_path / 'v.db'}")
        try:
            yield b
        finally:
            b.close_all()
    else:
        yield from _postgres_backend(request.getfixturevalue("postgres_server"))


@pytest.fixture
def pg_backend(postgres_server: Any) -> Iterator[Backend]:
    """The PostgreSQL backend alone, for tests of what only it does."""
    yield from _postgres_backend(postgres_server)
