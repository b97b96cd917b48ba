"""The SQLite database: per-thread connections, transactions, the schema and its version.

Each thread gets its own connection (WAL lets readers run beside one writer); writes go
through `transaction()` (BEGIN IMMEDIATE) so a 2xx answer means the row is on disk
(synchronous=FULL). The table modules beside this one (items, embeddings, models, jobs,
state) hold the SQL; nothing outside this package sees a connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.storage.errors import StorageError

# The version-1 tables; later versions are steps in migrations.py.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    content_hash TEXT UNIQUE,
    media_type TEXT,
    size_bytes INTEGER,
    duration_s REAL,
    width INTEGER,
    height INTEGER,
    modalities TEXT NOT NULL,
    transcript TEXT,
    transcript_source TEXT,
    transcript_vtt TEXT,
    text TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_kind ON items(kind, seq);
CREATE INDEX IF NOT EXISTS items_status ON items(status);
CREATE TABLE IF NOT EXISTS item_metadata (
    item_seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (item_seq, key)
);
CREATE INDEX IF NOT EXISTS item_metadata_kv ON item_metadata(key, value);
CREATE TABLE IF NOT EXISTS embeddings (
    version TEXT NOT NULL,
    space TEXT NOT NULL,
    modality TEXT NOT NULL,
    item_seq INTEGER NOT NULL REFERENCES items(seq) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    PRIMARY KEY (version, space, modality, item_seq)
);
CREATE INDEX IF NOT EXISTS embeddings_item ON embeddings(item_seq);
CREATE TABLE IF NOT EXISTS models (
    version TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    parent TEXT,
    active INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    request TEXT NOT NULL DEFAULT '{}',
    progress TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    model_version TEXT,
    activated INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Database:
    """Opens a database file (creating the tables it lacks); hands out connections."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._create_schema()

    def _create_schema(self) -> None:
        """The version-1 tables, in one write transaction: processes opening a new file
        at once (the API and the worker) wait for each other instead of failing with
        "database is locked" (a deferred transaction cannot wait for the write lock)."""
        try:
            with self.transaction() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the database {self.path}: {exc}") from exc

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")  # first: the next one may have to wait
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back when it
        raises or when the COMMIT itself fails (a deferred constraint, a full disk), so
        the thread's connection is never left inside an open transaction."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back on its own already
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
