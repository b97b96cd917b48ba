"""Fixtures for every test: a throwaway PostgreSQL server (tests/postgres_cluster.py)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest (default "prepend" import mode) put this folder, tests/, first on sys.path to
# import this file, and tests/ holds folders named like the project's packages (model/,
# service/, indexer/). Run as `pytest` rather than `python -m pytest`, the repository is
# not on sys.path, and `import model` would find tests/model as a namespace package ahead
# of the editable install's finder. With the repository on sys.path, anywhere, the real
# (regular) packages win over those namespace folders.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from postgres_cluster import (  # noqa: E402  (tests/ is on sys.path, as above)
    MISSING_REASON,
    PostgresCluster,
    find_postgres_bin,
)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole session; skipped where it is not installed."""
    bindir = find_postgres_bin()
    if bindir is None:
        pytest.skip(MISSING_REASON)
    with PostgresCluster(bindir) as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database's URL (postgresql://postgres@127.0.0.1:<port>/<name>),
    dropped after the test even if connections to it are still open."""
    url = postgres_cluster.create_database()
    yield url
    # Errors ignored: the whole cluster goes at the end of the session anyway.
    with contextlib.suppress(Exception):
        postgres_cluster.drop_database(url.rsplit("/", 1)[1], force=True)


# make test runs on two processes, a module to one of them (-n 2 --dist loadscope), and
# ends when its longest module ends: those start first, so that the short ones fill the
# other process meanwhile. Measured with --durations on 2 cores; longest first.
LONGEST_FIRST = (
    "tests/e2e/test_e2e_training.py",
    "tests/e2e/test_web_page.py",
    "tests/e2e/test_e2e_replicas.py",
    "tests/e2e/test_reliability_crashes.py",
    "tests/e2e/test_e2e_moments.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    # A stable sort: within a module the order (and its fixtures' grouping) is kept.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
