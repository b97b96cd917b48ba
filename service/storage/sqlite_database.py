"""SQLite: one file in the data directory, per-thread connections, WAL.

Each thread gets its own connection (WAL lets readers run beside one writer); writes go
through `transaction()` (BEGIN IMMEDIATE: one writer at a time, so a transaction that
reads and then writes needs no row locks) and a 2xx answer means the row is on disk
(synchronous=FULL). Only one host can use the file (its WAL needs shared memory), so
the API is one process here and `exclusive()` is always granted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.storage.errors import ConstraintViolation, StorageError


class _Connection(sqlite3.Connection):
    """sqlite3's connection, which can be referenced weakly (the base class cannot)."""


class _ThreadConnection:
    """A thread's connection, closed when the thread ends (its thread-local data goes).
    Garbage collection alone does not release the file: a connection sits in a cycle with
    its statement cache, and a collected one whose statements outlive it stays open."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


class SqliteDatabase:
    engine = "sqlite"
    for_update = ""
    skip_locked = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._local = threading.local()
        # Every open connection, to close them at shutdown; weakly, so that a thread's
        # connection closes when the thread ends (anyio ends worker threads idle for
        # 10 s: a list kept each burst's connections, two descriptors each, forever).
        self._all: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()
        self._all_lock = threading.Lock()
        try:
            self.connection()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the database {self.path}: {exc}") from exc

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: transactions are explicit)."""
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        conn = held.conn if held is not None else None
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, factory=_Connection
            )
            conn.execute("PRAGMA busy_timeout=30000")  # first: the next one may have to wait
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.held = _ThreadConnection(conn)
            with self._all_lock:
                self._all.add(conn)
        return conn

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back when it
        raises or when the COMMIT itself fails (a deferred constraint, a full disk), so
        the thread's connection is never left inside an open transaction. BEGIN
        IMMEDIATE already makes every write transaction a critical section (`lock`)."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot write to the database {self.path}: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:  # SQLite may have rolled back on its own already
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise ConstraintViolation(str(exc)) from exc
            raise

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        yield True

    def analyze(self) -> None:
        """Nothing: SQLite plans these queries by their indexes, without statistics."""

    def clock(self) -> float:
        """This host's: a SQLite file has one host."""
        return time.time()

    def close(self) -> None:
        with self._all_lock:
            for conn in list(self._all):
                conn.close()
            self._all.clear()
        self._local = threading.local()
