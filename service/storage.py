"""The embedded store: SQLite in WAL mode (items, metadata, embeddings, models, jobs).

The embeddings here are the truth; FAISS indexes are derived from them. Each thread
gets its own connection (WAL lets readers run beside one writer); writes go through
`transaction()` (BEGIN IMMEDIATE) so a 2xx answer means the row is on disk
(synchronous=FULL).

Item ids are opaque strings for clients; `seq` (an AUTOINCREMENT integer that is never
reused) is the id FAISS stores and the key of cursor pagination.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
READY_CACHE_ITEMS = 50_000  # item rows kept in memory for joining search results

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

_ITEM_COLUMNS = (
    "seq, id, kind, status, content_hash, media_type, size_bytes, duration_s, width, height, "
    "modalities, transcript, transcript_source, text, metadata, error, created_at"
)


class StorageError(RuntimeError):
    """The database cannot be opened or has an unexpected schema."""


class DuplicateContent(Exception):
    """An item with the same content hash exists; carries it."""

    def __init__(self, existing: ItemRow) -> None:
        super().__init__(f"item {existing.id} has the same content")
        self.existing = existing


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return secrets.token_urlsafe(12)


@dataclass
class ItemRow:
    seq: int
    id: str
    kind: str
    status: str
    content_hash: str | None
    media_type: str | None
    size_bytes: int | None
    duration_s: float | None
    width: int | None
    height: int | None
    modalities: list[str]
    transcript: str | None
    transcript_source: str | None
    text: str | None
    metadata: dict[str, Any]
    error: str | None
    created_at: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ItemRow:
        values = list(row)
        values[10] = json.loads(values[10])
        values[14] = json.loads(values[14])
        return cls(*values)


@dataclass
class NewItem:
    """What ingestion knows about an item before it is processed."""

    kind: str
    modalities: list[str]
    status: str = "processing"
    content_hash: str | None = None
    media_type: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    transcript: str | None = None
    transcript_source: str | None = None
    transcript_vtt: str | None = None  # timed segments, for training (not in the API)
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Embedding:
    space: str
    modality: str
    vector: np.ndarray  # float32 [D], L2-normalised


@dataclass
class ModelRow:
    version: str
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    parent: str | None
    active: bool


@dataclass
class JobRow:
    id: str
    status: str
    created_at: str
    updated_at: str
    request: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    model_version: str | None
    activated: bool
    error: str | None


def _meta_value(value: Any) -> str:
    """Canonical text of a metadata value, so filters compare exactly (1 != "1" != true)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


class Storage:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._ready_rows: OrderedDict[int, ItemRow] = OrderedDict()  # LRU, see items_by_seq
        self._cache_lock = threading.Lock()
        conn = self._conn()
        try:
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the database {self.path}: {exc}") from exc
        found = self.get_state("schema_version")
        if found is None:
            self.set_state("schema_version", str(SCHEMA_VERSION))
        elif int(found) != SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has schema version {found}; this service reads {SCHEMA_VERSION}"
            )

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- items -------------------------------------------------------------------------
    def create_item(
        self,
        new: NewItem,
        version: str | None = None,
        embeddings: Sequence[Embedding] = (),
    ) -> ItemRow:
        """Insert a new item (with its embeddings for `version`, in the same transaction);
        DuplicateContent when its content hash is already stored."""
        item_id = new_id()
        created = now_rfc3339()
        try:
            with self.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO items (id, kind, status, content_hash, media_type, size_bytes,"
                    " duration_s, width, height, modalities, transcript, transcript_source,"
                    " transcript_vtt, text, metadata, created_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        item_id,
                        new.kind,
                        new.status,
                        new.content_hash,
                        new.media_type,
                        new.size_bytes,
                        new.duration_s,
                        new.width,
                        new.height,
                        json.dumps(new.modalities),
                        new.transcript,
                        new.transcript_source,
                        new.transcript_vtt,
                        new.text,
                        json.dumps(new.metadata, sort_keys=True),
                        created,
                    ),
                )
                seq = int(cur.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO item_metadata (item_seq, key, value) VALUES (?,?,?)",
                    [(seq, k, _meta_value(v)) for k, v in new.metadata.items()],
                )
                if embeddings:
                    assert version is not None
                    self._put_embeddings(conn, version, [(seq, e) for e in embeddings])
        except sqlite3.IntegrityError:
            existing = self.get_item_by_hash(new.content_hash) if new.content_hash else None
            if existing is None:
                raise
            raise DuplicateContent(existing) from None
        row = self.get_item_by_seq(seq)
        assert row is not None
        return row

    def create_ready_items(
        self, items: Sequence[tuple[NewItem, Sequence[Embedding]]], version: str
    ) -> list[int]:
        """Bulk insert of ready items with their embeddings, one transaction (imports,
        benchmarks); returns their seqs. No duplicate check beyond the unique hash."""
        created = now_rfc3339()
        seqs: list[int] = []
        with self.transaction() as conn:
            for new, embeddings in items:
                cur = conn.execute(
                    "INSERT INTO items (id, kind, status, content_hash, media_type, size_bytes,"
                    " duration_s, width, height, modalities, transcript, transcript_source,"
                    " text, metadata, created_at) VALUES (?,?,'ready',?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        new_id(), new.kind, new.content_hash, new.media_type, new.size_bytes,
                        new.duration_s, new.width, new.height, json.dumps(new.modalities),
                        new.transcript, new.transcript_source, new.text,
                        json.dumps(new.metadata, sort_keys=True), created,
                    ),
                )  # fmt: skip
                seq = int(cur.lastrowid or 0)
                seqs.append(seq)
                if new.metadata:
                    conn.executemany(
                        "INSERT INTO item_metadata (item_seq, key, value) VALUES (?,?,?)",
                        [(seq, k, _meta_value(v)) for k, v in new.metadata.items()],
                    )
                self._put_embeddings(conn, version, [(seq, e) for e in embeddings])
        return seqs

    def get_item(self, item_id: str) -> ItemRow | None:
        row = (
            self._conn()
            .execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,))
            .fetchone()
        )
        return ItemRow.from_row(row) if row else None

    def get_item_by_seq(self, seq: int) -> ItemRow | None:
        row = (
            self._conn()
            .execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE seq = ?", (seq,))
            .fetchone()
        )
        return ItemRow.from_row(row) if row else None

    def get_item_by_hash(self, content_hash: str) -> ItemRow | None:
        row = (
            self._conn()
            .execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE content_hash = ?", (content_hash,))
            .fetchone()
        )
        return ItemRow.from_row(row) if row else None

    def items_by_seq(self, seqs: Iterable[int]) -> dict[int, ItemRow]:
        """The items among `seqs` that still exist (deleted ones are simply absent).

        Search joins its results here: ready items are cached (they change only by being
        deleted, which drops them from the cache), so a hot item costs no SQL."""
        wanted = {int(s) for s in seqs}
        out: dict[int, ItemRow] = {}
        with self._cache_lock:
            for seq in wanted:
                row = self._ready_rows.get(seq)
                if row is not None:
                    out[seq] = row
                    self._ready_rows.move_to_end(seq)
        missing = sorted(wanted - out.keys())
        conn = self._conn()
        fetched: list[ItemRow] = []
        for start in range(0, len(missing), 900):  # SQLite's bound-parameter limit
            chunk = missing[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE seq IN ({marks})", chunk
            ):
                fetched.append(ItemRow.from_row(row))
        with self._cache_lock:
            for row in fetched:
                out[row.seq] = row
                if row.status == "ready":
                    self._ready_rows[row.seq] = row
            while len(self._ready_rows) > READY_CACHE_ITEMS:
                self._ready_rows.popitem(last=False)
        return out

    def _forget(self, seq: int) -> None:
        with self._cache_lock:
            self._ready_rows.pop(seq, None)

    def list_items(self, kind: str | None, limit: int, before_seq: int | None) -> list[ItemRow]:
        """Newest first; `before_seq` continues a listing (stable under inserts)."""
        where, args = [], []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = f"SELECT {_ITEM_COLUMNS} FROM items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [ItemRow.from_row(r) for r in self._conn().execute(sql, args)]

    def items_with_status(self, status: str) -> list[ItemRow]:
        rows = self._conn().execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE status = ? ORDER BY seq", (status,)
        )
        return [ItemRow.from_row(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT status, COUNT(*) FROM items GROUP BY status")
        return {status: int(n) for status, n in rows}

    def count_items(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def mark_ready(
        self,
        seq: int,
        version: str,
        embeddings: Sequence[Embedding],
        modalities: list[str],
        transcript: str | None,
        transcript_source: str | None,
        duration_s: float | None,
        transcript_vtt: str | None = None,
    ) -> bool:
        """Store embeddings and flip the item to ready in one transaction.

        False when the item was deleted meanwhile (nothing is stored then).
        """
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE items SET status = 'ready', error = NULL, modalities = ?,"
                " transcript = ?, transcript_source = ?, duration_s = ?,"
                " transcript_vtt = COALESCE(?, transcript_vtt) WHERE seq = ?",
                (
                    json.dumps(modalities),
                    transcript,
                    transcript_source,
                    duration_s,
                    transcript_vtt,
                    seq,
                ),
            )
            if cur.rowcount == 0:
                return False
            self._put_embeddings(conn, version, [(seq, e) for e in embeddings])
        self._forget(seq)
        return True

    def mark_failed(self, seq: int, error: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE items SET status = 'failed', error = ? WHERE seq = ?", (error, seq)
            )
        self._forget(seq)
        return cur.rowcount > 0

    def delete_item(self, seq: int) -> ItemRow | None:
        """Delete the item, its metadata and all its embeddings; returns what was deleted."""
        with self.transaction() as conn:
            sql = f"SELECT {_ITEM_COLUMNS} FROM items WHERE seq = ?"
            row = conn.execute(sql, (seq,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM embeddings WHERE item_seq = ?", (seq,))
            conn.execute("DELETE FROM item_metadata WHERE item_seq = ?", (seq,))
            conn.execute("DELETE FROM items WHERE seq = ?", (seq,))
        self._forget(seq)
        return ItemRow.from_row(row)

    def transcript_vtt(self, seq: int) -> str | None:
        row = (
            self._conn()
            .execute("SELECT transcript_vtt FROM items WHERE seq = ?", (seq,))
            .fetchone()
        )
        return row[0] if row else None

    def hash_in_use(self, content_hash: str) -> bool:
        row = (
            self._conn()
            .execute("SELECT 1 FROM items WHERE content_hash = ?", (content_hash,))
            .fetchone()
        )
        return row is not None

    def seqs_matching(self, filters: dict[str, Any]) -> np.ndarray:
        """Seqs of items whose metadata has every key with exactly that value (int64, sorted)."""
        if not filters:
            raise ValueError("seqs_matching needs at least one key")
        parts, args = [], []
        for key, value in filters.items():
            parts.append("SELECT item_seq FROM item_metadata WHERE key = ? AND value = ?")
            args.extend([key, _meta_value(value)])
        sql = " INTERSECT ".join(parts) + " ORDER BY 1"
        rows = self._conn().execute(sql, args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # -- embeddings --------------------------------------------------------------------
    @staticmethod
    def _put_embeddings(
        conn: sqlite3.Connection, version: str, rows: Sequence[tuple[int, Embedding]]
    ) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO embeddings (version, space, modality, item_seq, vector)"
            " VALUES (?,?,?,?,?)",
            [(version, e.space, e.modality, seq, _blob(e.vector)) for seq, e in rows],
        )

    def put_embeddings(self, version: str, rows: Sequence[tuple[int, Embedding]]) -> None:
        with self.transaction() as conn:
            self._put_embeddings(conn, version, rows)

    def get_embedding(self, seq: int, version: str, space: str, modality: str) -> np.ndarray | None:
        row = (
            self._conn()
            .execute(
                "SELECT vector FROM embeddings WHERE version = ? AND space = ? AND modality = ?"
                " AND item_seq = ?",
                (version, space, modality, seq),
            )
            .fetchone()
        )
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def embedding_counts(self, version: str) -> dict[tuple[str, str], int]:
        rows = self._conn().execute(
            "SELECT space, modality, COUNT(*) FROM embeddings WHERE version = ?"
            " GROUP BY space, modality",
            (version,),
        )
        return {(s, m): int(n) for s, m, n in rows}

    def embedding_seqs(self, version: str, space: str, modality: str) -> np.ndarray:
        rows = self._conn().execute(
            "SELECT item_seq FROM embeddings WHERE version = ? AND space = ? AND modality = ?",
            (version, space, modality),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def embeddings_for(
        self, version: str, space: str, modality: str, seqs: np.ndarray
    ) -> np.ndarray:
        """float32 [len(seqs), D] in the order given; KeyError naming a missing seq."""
        wanted = np.asarray(seqs, dtype=np.int64)
        found: dict[int, bytes] = {}
        conn = self._conn()
        unique = np.unique(wanted).tolist()
        for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for seq, blob in conn.execute(
                "SELECT item_seq, vector FROM embeddings WHERE version = ? AND space = ?"
                f" AND modality = ? AND item_seq IN ({marks})",
                (version, space, modality, *chunk),
            ):
                found[seq] = blob
        if not len(wanted):
            return np.zeros((0, 0), np.float32)
        try:
            joined = b"".join(found[s] for s in wanted.tolist())
        except KeyError as exc:
            raise KeyError(f"no {space}/{modality} embedding for item seq {exc.args[0]}") from None
        return np.frombuffer(joined, dtype=np.float32).reshape(len(wanted), -1).copy()

    def iter_embeddings(
        self, version: str, space: str, modality: str, batch: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(seqs int64 [n], vectors float32 [n, D]) in chunks, ordered by seq."""
        conn = self._conn()
        last = -1
        while True:
            rows = conn.execute(
                "SELECT item_seq, vector FROM embeddings WHERE version = ? AND space = ?"
                " AND modality = ? AND item_seq > ? ORDER BY item_seq LIMIT ?",
                (version, space, modality, last, batch),
            ).fetchall()
            if not rows:
                return
            seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            yield seqs, vectors.reshape(len(rows), -1).copy()
            last = int(seqs[-1])

    # -- models ------------------------------------------------------------------------
    def add_model(self, row: ModelRow) -> None:
        with self.transaction() as conn:
            if row.active:
                conn.execute("UPDATE models SET active = 0")
            conn.execute(
                "INSERT INTO models (version, created_at, config, metrics, parent, active)"
                " VALUES (?,?,?,?,?,?)",
                (
                    row.version,
                    row.created_at,
                    json.dumps(row.config),
                    json.dumps(row.metrics),
                    row.parent,
                    int(row.active),
                ),
            )

    def list_models(self) -> list[ModelRow]:
        rows = self._conn().execute(
            "SELECT version, created_at, config, metrics, parent, active FROM models"
            " ORDER BY created_at DESC, version"
        )
        return [
            ModelRow(v, c, json.loads(cfg), json.loads(m), p, bool(a))
            for v, c, cfg, m, p, a in rows
        ]

    def get_model(self, version: str) -> ModelRow | None:
        return next((m for m in self.list_models() if m.version == version), None)

    def active_model(self) -> ModelRow | None:
        return next((m for m in self.list_models() if m.active), None)

    def set_active_model(self, version: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE models SET active = (version = ?)", (version,))

    # -- jobs --------------------------------------------------------------------------
    def list_jobs(self) -> list[JobRow]:
        rows = self._conn().execute(
            "SELECT id, status, created_at, updated_at, request, progress, metrics,"
            " model_version, activated, error FROM jobs ORDER BY created_at DESC, rowid DESC"
        )
        return [self._job(r) for r in rows]

    def get_job(self, job_id: str) -> JobRow | None:
        row = (
            self._conn()
            .execute(
                "SELECT id, status, created_at, updated_at, request, progress, metrics,"
                " model_version, activated, error FROM jobs WHERE id = ?",
                (job_id,),
            )
            .fetchone()
        )
        return self._job(row) if row else None

    @staticmethod
    def _job(r: Sequence[Any]) -> JobRow:
        return JobRow(
            r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), json.loads(r[6]),
            r[7], bool(r[8]), r[9],
        )  # fmt: skip

    # -- small key/value state ---------------------------------------------------------
    def get_state(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
