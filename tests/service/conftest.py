"""Fixtures shared by the service's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import Storage

DATABASES = ("sqlite", "postgresql")


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a test's database lives, once per engine: a SQLite file in the test's
    folder, or a fresh database on the session's throwaway PostgreSQL server."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path / "db.sqlite"


@pytest.fixture
def storage(database: str | Path) -> Iterator[Storage]:
    """A fresh database of each engine, closed afterwards."""
    s = Storage(database)
    yield s
    s.close()
