"""The embeddings table: one vector per (model version, space, modality, item).

These vectors are the truth; FAISS indexes are derived from them (service/indexes.py
reads them here). They are written only together with their item's row or status
(items.py calls `insert_embeddings` inside its own transaction), so an item is never
ready without its vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.storage.changes import INDEXED, record_changes
from service.storage.database import Connection, Database
from service.storage.errors import UnknownVersion
from service.storage.rows import Embedding

MAX_PARAMS = 900  # below SQLite's bound-parameter limit, for IN (...) lists


def insert_embeddings(
    conn: Connection, version: str, rows: Sequence[tuple[int, Embedding]]
) -> None:
    """(seq, embedding) pairs, inside the caller's transaction."""
    insert_rows(conn, "embeddings", "item_seq", version, rows)


def insert_rows(
    conn: Connection,
    table: str,
    id_column: str,
    version: str,
    rows: Sequence[tuple[int, Embedding]],
) -> None:
    """Vectors into `table` (embeddings or segment_embeddings); one written again
    (processing repeated after a crash) keeps the latest."""
    conn.executemany(
        f"INSERT INTO {table} (version, space, modality, {id_column}, vector) VALUES (?,?,?,?,?)"
        f" ON CONFLICT (version, space, modality, {id_column})"
        " DO UPDATE SET vector = excluded.vector",
        [(version, e.space, e.modality, seq, vector_blob(e.vector)) for seq, e in rows],
    )


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _read_blobs(
    db: Database, table: str, id_column: str, where: tuple[str, str, str], seqs: np.ndarray
) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    conn = db.connection()
    unique = np.unique(seqs).tolist()
    for start in range(0, len(unique), MAX_PARAMS):
        chunk = unique[start : start + MAX_PARAMS]
        marks = ",".join("?" * len(chunk))
        for seq, blob in conn.execute(
            f"SELECT {id_column}, vector FROM {table} WHERE version = ? AND space = ?"
            f" AND modality = ? AND {id_column} IN ({marks})",
            (*where, *chunk),
        ):
            found[seq] = bytes(blob)
    return found


def read_present(
    db: Database, table: str, id_column: str, where: tuple[str, str, str], seqs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors [n, D]) of those of `seqs` that have a row: what a replica following
    the change log adds (an item deleted since, or not embedded by this version, has none)."""
    found = _read_blobs(db, table, id_column, where, np.asarray(seqs, dtype=np.int64))
    if not found:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.array(sorted(found), dtype=np.int64)
    joined = b"".join(found[s] for s in ids.tolist())
    return ids, np.frombuffer(joined, dtype=np.float32).reshape(len(ids), -1).copy()


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
    found = _read_blobs(db, table, id_column, where, wanted)
    if not len(wanted):
        return np.zeros((0, 0), np.float32)
    try:
        joined = b"".join(found[s] for s in wanted.tolist())
    except KeyError as exc:
        raise KeyError(f"no {where[1]}/{where[2]} embedding for {what} {exc.args[0]}") from None
    return np.frombuffer(joined, dtype=np.float32).reshape(len(wanted), -1).copy()


def lock_present(conn: Connection, db: Database, table: str, seqs: set[int]) -> list[int]:
    """Those of `seqs` that are rows of `table` (items or segments), locked against
    deletion until the transaction ends."""
    out: list[int] = []
    unique = sorted(seqs)
    lock = " FOR KEY SHARE" if db.for_update else ""
    for start in range(0, len(unique), MAX_PARAMS):
        chunk = unique[start : start + MAX_PARAMS]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT seq FROM {table} WHERE seq IN ({marks}) ORDER BY seq{lock}"
        out += [r[0] for r in conn.execute(sql, chunk)]
    return out


def lock_version(conn: Connection, db: Database, version: str) -> None:
    """The model version's row, locked against its deletion until the transaction ends
    (a DELETE of the version then waits, and removes what this one wrote); UnknownVersion
    when it is gone: its vectors would be orphans."""
    lock = " FOR KEY SHARE" if db.for_update else ""
    found = conn.execute(f"SELECT 1 FROM models WHERE version = ?{lock}", (version,)).fetchone()
    if found is None:
        raise UnknownVersion(version)


class Embeddings:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_for_stored(self, version: str, rows: Sequence[tuple[int, Embedding]]) -> int:
        """Another version's vectors for items already stored (re-indexing), in one
        transaction; items deleted meanwhile are skipped, not brought back. Returns how
        many vectors were written; UnknownVersion when the version was deleted."""
        with self._db.transaction() as conn:
            lock_version(conn, self._db, version)
            # The items' rows locked first: one deleted meanwhile is skipped, not brought
            # back (on PostgreSQL a concurrent delete waits for this, or this for it).
            present = set(lock_present(conn, self._db, "items", {seq for seq, _ in rows}))
            written = [(seq, e) for seq, e in rows if seq in present]
            insert_embeddings(conn, version, written)
            record_changes(conn, sorted(present), INDEXED, version)
        return len(written)

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

    def present(
        self, version: str, space: str, modality: str, seqs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(seqs, vectors) of those of `seqs` with this embedding."""
        return read_present(self._db, "embeddings", "item_seq", (version, space, modality), seqs)
