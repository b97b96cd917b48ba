"""The embeddings table: one vector per (model version, space, modality, item).

These vectors are the truth; FAISS indexes are derived from them (service/indexes.py
reads them here). They are written only together with their item's row or status
(items.py calls `insert_embeddings` inside its own transaction), so an item is never
ready without its vectors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import numpy as np

from service.storage.database import Database
from service.storage.rows import Embedding

SQLITE_MAX_PARAMS = 900  # below SQLite's bound-parameter limit, for IN (...) lists


def insert_embeddings(
    conn: sqlite3.Connection, version: str, rows: Sequence[tuple[int, Embedding]]
) -> None:
    """(seq, embedding) pairs, inside the caller's transaction."""
    conn.executemany(
        "INSERT OR REPLACE INTO embeddings (version, space, modality, item_seq, vector)"
        " VALUES (?,?,?,?,?)",
        [(version, e.space, e.modality, seq, vector_blob(e.vector)) for seq, e in rows],
    )


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def read_vectors(
    db: Database,
    table: str,
    id_column: str,
    where: tuple[str, str, str],
    seqs: np.ndarray,
    what: str,
) -> np.ndarray:
    """Rows of `table` (embeddings or segment_embeddings) for (version, space, modality)
    as float32 [len(seqs), D] in the order given; KeyError naming a missing one."""
    wanted = np.asarray(seqs, dtype=np.int64)
    found: dict[int, bytes] = {}
    conn = db.connection()
    unique = np.unique(wanted).tolist()
    for start in range(0, len(unique), SQLITE_MAX_PARAMS):
        chunk = unique[start : start + SQLITE_MAX_PARAMS]
        marks = ",".join("?" * len(chunk))
        for seq, blob in conn.execute(
            f"SELECT {id_column}, vector FROM {table} WHERE version = ? AND space = ?"
            f" AND modality = ? AND {id_column} IN ({marks})",
            (*where, *chunk),
        ):
            found[seq] = blob
    if not len(wanted):
        return np.zeros((0, 0), np.float32)
    try:
        joined = b"".join(found[s] for s in wanted.tolist())
    except KeyError as exc:
        raise KeyError(f"no {where[1]}/{where[2]} embedding for {what} {exc.args[0]}") from None
    return np.frombuffer(joined, dtype=np.float32).reshape(len(wanted), -1).copy()


class Embeddings:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_for_stored(self, version: str, rows: Sequence[tuple[int, Embedding]]) -> int:
        """Another version's vectors for items already stored (re-indexing), in one
        transaction; items deleted meanwhile are skipped, not brought back. Returns how
        many vectors were written."""
        with self._db.transaction() as conn:
            cur = conn.executemany(
                "INSERT OR REPLACE INTO embeddings (version, space, modality, item_seq, vector)"
                " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM items WHERE seq = ?)",
                [
                    (version, e.space, e.modality, seq, vector_blob(e.vector), seq)
                    for seq, e in rows
                ],
            )
        return int(cur.rowcount)

    def get(self, seq: int, version: str, space: str, modality: str) -> np.ndarray | None:
        row = (
            self._db.connection()
            .execute(
                "SELECT vector FROM embeddings WHERE version = ? AND space = ? AND modality = ?"
                " AND item_seq = ?",
                (version, space, modality, seq),
            )
            .fetchone()
        )
        return np.frombuffer(row[0], dtype=np.float32).copy() if row else None

    def seqs(self, version: str, space: str, modality: str) -> np.ndarray:
        """Seqs of the items with this embedding (int64)."""
        rows = self._db.connection().execute(
            "SELECT item_seq FROM embeddings WHERE version = ? AND space = ? AND modality = ?",
            (version, space, modality),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def vectors(self, version: str, space: str, modality: str, seqs: np.ndarray) -> np.ndarray:
        """float32 [len(seqs), D] in the order given; KeyError naming a missing seq."""
        where = (version, space, modality)
        return read_vectors(self._db, "embeddings", "item_seq", where, seqs, "item seq")
