"""The database behind storage: SQLite on one host, PostgreSQL past one machine.

`open_database(location)` picks by the location: a `postgresql://` URL opens
PostgreSQL (service/storage/postgres_database.py: psycopg 3 and a connection pool),
anything else is the path of a SQLite file (service/storage/sqlite_database.py). Both
hand the table modules the same small interface, so the SQL beside this file is
written once:

    db.connection().execute(sql, params)   a read (rows: fetchone, fetchall, iterate)
    with db.transaction(lock=...) as conn  a write transaction, committed at the end
    db.exclusive(name)                     "am I the one process doing this?"

SQL uses `?` placeholders and the subset both engines share: `ON CONFLICT ... DO
UPDATE` rather than `INSERT OR REPLACE`, `RETURNING` rather than lastrowid, `CASE`
rather than SQLite's two-argument MAX. Where the engines must differ the database
says how: `for_update` and `skip_locked` are row-locking clauses (empty on SQLite,
whose write transactions are serialised anyway).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Rows(Protocol):
    """What a statement gives back (an sqlite3 cursor, or rows PostgreSQL returned)."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Rows: ...


class Database(Protocol):
    name: str  # what messages call it: the file, or the URL without its password
    engine: str  # "sqlite" | "postgresql"
    for_update: str  # appended to a SELECT that locks the rows it reads
    skip_locked: str  # ... and skips rows other transactions have locked

    def connection(self) -> Connection: ...

    def transaction(self, lock: str | None = None) -> AbstractContextManager[Connection]:
        """One write transaction. `lock` names a critical section: transactions with the
        same name run one at a time across every process on the database."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Try to become the one process (of all on this database) doing `name`; True
        while held, released when the block ends or the process dies."""
        ...

    def analyze(self) -> None:
        """Bring the planner's statistics up to date (after bulk writes)."""
        ...

    def clock(self) -> float:
        """Seconds since the epoch by the database's clock. Leases and heartbeats are
        stamped and compared with it: on several hosts, each host's own clock would
        hand a running job on, or take a live replica's uploads, when the clocks differ
        by more than a lease."""
        ...

    def close(self) -> None: ...


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def open_database(location: str | Path, pool_size: int = 10) -> Database:
    """PostgreSQL for a postgresql:// URL, else the SQLite file at this path."""
    if is_postgres_url(location):
        from service.storage.postgres_database import PostgresDatabase

        return PostgresDatabase(str(location), pool_size)
    from service.storage.sqlite_database import SqliteDatabase

    return SqliteDatabase(Path(location))
