"""The segments table: the stretches of long items (moments), and their vectors per
(model version, space, modality) in segment_embeddings.

A long item's segments are written in the transaction that makes it ready (items.py
calls `insert_segments`), deleted with it, and re-embedded by a switch of versions like
the item's own vectors. FAISS indexes of segments are derived from these rows
(service/indexes.py), under ids kept apart from item seqs (SEGMENT_ID_BASE).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from service.storage.changes import INDEXED, record_changes
from service.storage.database import Connection, Database
from service.storage.embeddings import (
    MAX_PARAMS,
    insert_rows,
    lock_present,
    lock_version,
    read_present,
    read_vectors,
)
from service.storage.rows import Embedding, NewSegment, SegmentRow

_COLUMNS = "seq, item_seq, start_s, end_s, text"


def insert_segments(
    conn: Connection, item_seq: int, version: str, segments: Sequence[NewSegment]
) -> list[int]:
    """The segments of an item and their vectors, inside the caller's transaction;
    returns their seqs in order."""
    seqs = []
    for segment in segments:
        seq = conn.execute(
            "INSERT INTO segments (item_seq, start_s, end_s, text) VALUES (?,?,?,?) RETURNING seq",
            (item_seq, segment.start_s, segment.end_s, segment.text),
        ).fetchone()[0]
        seqs.append(seq)
        insert_segment_embeddings(conn, version, [(seq, e) for e in segment.embeddings])
    return seqs


def insert_segment_embeddings(
    conn: Connection, version: str, rows: Sequence[tuple[int, Embedding]]
) -> None:
    insert_rows(conn, "segment_embeddings", "segment_seq", version, rows)


def delete_segments(conn: Connection, item_seq: int) -> list[int]:
    """Remove an item's segments and their vectors; returns the seqs that were removed."""
    seqs = [r[0] for r in conn.execute("SELECT seq FROM segments WHERE item_seq = ?", (item_seq,))]
    conn.execute(
        "DELETE FROM segment_embeddings WHERE segment_seq IN"
        " (SELECT seq FROM segments WHERE item_seq = ?)",
        (item_seq,),
    )
    conn.execute("DELETE FROM segments WHERE item_seq = ?", (item_seq,))
    return seqs


class Segments:
    def __init__(self, db: Database) -> None:
        self._db = db

    def of_item(self, item_seq: int) -> list[SegmentRow]:
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM segments WHERE item_seq = ? ORDER BY start_s", (item_seq,)
        )
        return [SegmentRow(*r) for r in rows]

    def by_seqs(self, seqs: Iterable[int]) -> dict[int, SegmentRow]:
        out: dict[int, SegmentRow] = {}
        unique = sorted(set(seqs))
        conn = self._db.connection()
        for start in range(0, len(unique), MAX_PARAMS):
            chunk = unique[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            for r in conn.execute(f"SELECT {_COLUMNS} FROM segments WHERE seq IN ({marks})", chunk):
                out[r[0]] = SegmentRow(*r)
        return out

    def seqs_of_items(self, item_seqs: np.ndarray) -> np.ndarray:
        """The segment seqs of these items (int64), for filtered searches."""
        out: list[int] = []
        unique = np.unique(np.asarray(item_seqs, dtype=np.int64)).tolist()
        conn = self._db.connection()
        for start in range(0, len(unique), MAX_PARAMS):
            chunk = unique[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            out += [
                r[0]
                for r in conn.execute(
                    f"SELECT seq FROM segments WHERE item_seq IN ({marks})", chunk
                )
            ]
        return np.asarray(out, dtype=np.int64)

    def insert_spans(
        self, item_seq: int, spans: Sequence[tuple[float, float, str | None]]
    ) -> list[int]:
        """Segments of a stored item, without vectors yet (their backfill embeds them);
        none when the item is gone or already has segments. Returns their seqs."""
        with self._db.transaction() as conn:
            # The item's row locked: two replicas backfilling it at once cut it once.
            found = conn.execute(
                f"SELECT 1 FROM items WHERE seq = ?{self._db.for_update}", (item_seq,)
            ).fetchone()
            if found is None:
                return []
            if conn.execute(
                "SELECT 1 FROM segments WHERE item_seq = ? LIMIT 1", (item_seq,)
            ).fetchone():
                return []
            return insert_segments(
                conn, item_seq, "", [NewSegment(s, e, [], text) for s, e, text in spans]
            )

    def without_vectors(self, item_seqs: Sequence[int], version: str) -> set[int]:
        """Seqs of these items' segments that have no vector of `version` yet."""
        if not item_seqs:
            return set()
        marks = ",".join("?" * len(item_seqs))
        rows = self._db.connection().execute(
            f"SELECT s.seq FROM segments s WHERE s.item_seq IN ({marks}) AND NOT EXISTS"
            " (SELECT 1 FROM segment_embeddings e WHERE e.segment_seq = s.seq"
            " AND e.version || '' = ?)",
            (*item_seqs, version),
        )
        return {r[0] for r in rows}

    def count(self) -> int:
        return int(self._db.connection().execute("SELECT COUNT(*) FROM segments").fetchone()[0])

    def items_count(self) -> int:
        """How many items have segments (long ones)."""
        row = self._db.connection().execute("SELECT COUNT(DISTINCT item_seq) FROM segments")
        return int(row.fetchone()[0])

    # -- vectors -------------------------------------------------------------------------
    def seqs(self, version: str, space: str, modality: str) -> np.ndarray:
        """Seqs of the segments with this embedding (int64)."""
        rows = self._db.connection().execute(
            "SELECT segment_seq FROM segment_embeddings WHERE version = ? AND space = ?"
            " AND modality = ?",
            (version, space, modality),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def vectors(self, version: str, space: str, modality: str, seqs: np.ndarray) -> np.ndarray:
        """float32 [len(seqs), D] in the order given; KeyError naming a missing seq."""
        where = (version, space, modality)
        return read_vectors(self._db, "segment_embeddings", "segment_seq", where, seqs, "segment")

    def present(
        self, version: str, space: str, modality: str, seqs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(seqs, vectors) of those of `seqs` with this embedding."""
        where = (version, space, modality)
        return read_present(self._db, "segment_embeddings", "segment_seq", where, seqs)

    def vectors_of_item(
        self, item_seq: int, version: str, space: str, modality: str
    ) -> tuple[list[SegmentRow], np.ndarray]:
        """An item's segments (by start) and their vectors [n, D] in one version."""
        rows = (
            self._db.connection()
            .execute(
                f"SELECT s.{_COLUMNS.replace(', ', ', s.')}, e.vector FROM segments s"
                " JOIN segment_embeddings e ON e.segment_seq = s.seq"
                " WHERE s.item_seq = ? AND e.version = ? AND e.space = ? AND e.modality = ?"
                " ORDER BY s.start_s",
                (item_seq, version, space, modality),
            )
            .fetchall()
        )
        segments = [SegmentRow(*r[:5]) for r in rows]
        if not rows:
            return segments, np.zeros((0, 0), np.float32)
        return segments, np.stack([np.frombuffer(r[5], dtype=np.float32) for r in rows])

    def add_for_stored(self, version: str, rows: Sequence[tuple[int, Embedding]]) -> int:
        """Another version's vectors for stored segments (re-indexing); segments deleted
        meanwhile are skipped. Returns how many vectors were written; UnknownVersion
        when the version was deleted."""
        with self._db.transaction() as conn:
            lock_version(conn, self._db, version)
            present = set(lock_present(conn, self._db, "segments", {seq for seq, _ in rows}))
            written = [(seq, e) for seq, e in rows if seq in present]
            insert_rows(conn, "segment_embeddings", "segment_seq", version, written)
            items = self._items_of(conn, sorted(present))
            record_changes(conn, items, INDEXED, version)
        return len(written)

    @staticmethod
    def _items_of(conn: Connection, segment_seqs: list[int]) -> list[int]:
        items: set[int] = set()
        for start in range(0, len(segment_seqs), MAX_PARAMS):
            chunk = segment_seqs[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT DISTINCT item_seq FROM segments WHERE seq IN ({marks})"
            items.update(r[0] for r in conn.execute(sql, chunk))
        return sorted(items)
