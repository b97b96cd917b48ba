"""Fixtures shared by the service's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.storage import Storage


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    """A fresh database in the test's folder, closed afterwards."""
    s = Storage(tmp_path / "db.sqlite")
    yield s
    s.close()
