"""The items table and its metadata: create, read, list, status changes, delete, filters.

Item ids are opaque strings for clients; `seq` (an AUTOINCREMENT integer that is never
reused) is the id FAISS stores and the key of cursor pagination. Ready rows are cached
for search's join: they change only by being deleted, which drops them from the cache.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np

from service.storage.changes import DELETED, INDEXED, record_change
from service.storage.database import Connection, Database
from service.storage.embeddings import MAX_PARAMS, insert_embeddings
from service.storage.errors import ConstraintViolation, DuplicateContent
from service.storage.rows import (
    Embedding,
    ItemRow,
    NewItem,
    NewSegment,
    TrainingClip,
    now_rfc3339,
)
from service.storage.segments import delete_segments, insert_segments

READY_CACHE_ITEMS = 50_000  # item rows kept in memory for joining search results

_COLUMNS = (
    "seq, id, kind, status, content_hash, media_type, size_bytes, duration_s, width, height, "
    "modalities, transcript, transcript_source, text, metadata, error, created_at, filename"
)


# Keys a listing's filter may hold: one SQL statement's bound parameters (two a key).
MAX_LIST_FILTER_KEYS = 100


class _SameBytesStored(Exception):
    """Raised inside `create`'s transaction to roll it back: an item holds the bytes."""


def _media_lock(content_hash: str | None) -> str | None:
    return f"media:{content_hash}" if content_hash else None


def new_id() -> str:
    return secrets.token_urlsafe(12)


def _meta_value(value: Any) -> str:
    """Canonical text of a metadata value, so filters compare exactly (1 != "1" != true)
    and a number is one number however it was written: JSON has no integer type, so 4.0
    (a Python client's float) and 4 (a browser's) are the same value. Migration step 5
    rewrites the rows stored before, by the same rule: an integral float whose text
    ends in ".0" (|x| < 1e16, where Python stops writing exponents) becomes the integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# PostgreSQL's btree index on (key, value) refuses an entry over 2,704 bytes (SQLite has
# no such limit): one bound for both engines, under it with room for the row's overhead.
MAX_METADATA_ENTRY_BYTES = 2400


def metadata_entry_bytes(key: str, value: Any) -> int:
    """What one metadata entry takes in the index: its key and its canonical value."""
    return len(key.encode("utf-8", "surrogatepass")) + len(_meta_value(value))


def _insert_metadata(conn: Connection, seq: int, metadata: dict[str, Any]) -> None:
    conn.executemany(
        "INSERT INTO item_metadata (item_seq, key, value) VALUES (?,?,?)",
        [(seq, k, _meta_value(v)) for k, v in metadata.items()],
    )


class Items:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._ready_rows: OrderedDict[int, ItemRow] = OrderedDict()  # LRU, see by_seqs
        self._cache_lock = threading.Lock()

    # -- writes ------------------------------------------------------------------------
    def create(
        self,
        new: NewItem,
        version: str | None = None,
        embeddings: Sequence[Embedding] = (),
        processing_by: str | None = None,
        before_insert: Callable[[], None] | None = None,
        retry: bool = True,
    ) -> ItemRow:
        """Insert a new item (with its embeddings for `version`, in the same transaction);
        DuplicateContent when its content hash is already stored. `processing_by` names
        the API replica that will process it (another takes over if that one dies).
        `before_insert` (putting the media file in place) runs inside the transaction,
        under the content hash's lock that `remove_media_if_unused` takes too, and only
        when no item holds the same bytes: a duplicate leaves the caller's file where it
        was (it may upload it again once that item is gone)."""
        lock = _media_lock(new.content_hash)
        try:
            with self._db.transaction(lock=lock) as conn:
                if (
                    new.content_hash is not None
                    and conn.execute(
                        "SELECT 1 FROM items WHERE content_hash = ?", (new.content_hash,)
                    ).fetchone()
                ):
                    raise _SameBytesStored
                if before_insert is not None:
                    before_insert()
                seq = conn.execute(
                    "INSERT INTO items (id, kind, status, content_hash, media_type, size_bytes,"
                    " duration_s, width, height, modalities, transcript, transcript_source,"
                    " transcript_vtt, text, metadata, created_at, processing_by, filename, asr)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING seq",
                    (
                        new_id(), new.kind, new.status, new.content_hash, new.media_type,
                        new.size_bytes, new.duration_s, new.width, new.height,
                        json.dumps(new.modalities), new.transcript, new.transcript_source,
                        new.transcript_vtt, new.text, json.dumps(new.metadata, sort_keys=True),
                        now_rfc3339(), processing_by if new.status == "processing" else None,
                        new.filename, int(new.asr),
                    ),
                ).fetchone()[0]  # fmt: skip
                _insert_metadata(conn, seq, new.metadata)
                if embeddings:
                    assert version is not None
                    insert_embeddings(conn, version, [(seq, e) for e in embeddings])
                    record_change(conn, seq, INDEXED)
                # Read in the same transaction: once committed, a DELETE may come first (a
                # client that saw the item listed), and a read after it found nothing (500).
                created = conn.execute(
                    f"SELECT {_COLUMNS} FROM items WHERE seq = ?", (seq,)
                ).fetchone()
        except (ConstraintViolation, _SameBytesStored):
            existing = self.get_by_hash(new.content_hash) if new.content_hash else None
            if existing is None:  # that item was deleted just now: the hash is free again
                if not retry:
                    raise ConstraintViolation("an item with the same bytes came and went") from None
                return self.create(new, version, embeddings, processing_by, before_insert, False)
            raise DuplicateContent(existing) from None
        return ItemRow.from_row(created)

    def create_ready(
        self, items: Sequence[tuple[NewItem, Sequence[Embedding]]], version: str
    ) -> list[int]:
        """Bulk insert of ready items with their embeddings, one transaction (imports,
        benchmarks); returns their seqs. No duplicate check beyond the unique hash."""
        created = now_rfc3339()
        seqs: list[int] = []
        with self._db.transaction() as conn:
            for new, embeddings in items:
                seq = conn.execute(
                    "INSERT INTO items (id, kind, status, content_hash, media_type, size_bytes,"
                    " duration_s, width, height, modalities, transcript, transcript_source,"
                    " text, metadata, created_at, filename)"
                    " VALUES (?,?,'ready',?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING seq",
                    (
                        new_id(), new.kind, new.content_hash, new.media_type, new.size_bytes,
                        new.duration_s, new.width, new.height, json.dumps(new.modalities),
                        new.transcript, new.transcript_source, new.text,
                        json.dumps(new.metadata, sort_keys=True), created, new.filename,
                    ),
                ).fetchone()[0]  # fmt: skip
                seqs.append(seq)
                _insert_metadata(conn, seq, new.metadata)
                insert_embeddings(conn, version, [(seq, e) for e in embeddings])
                record_change(conn, seq, INDEXED)
        return seqs

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
        segments: Sequence[NewSegment] = (),
    ) -> list[int] | None:
        """Store embeddings (and a long item's segments with theirs) and flip the item to
        ready in one transaction; returns the segments' seqs.

        None when the item was deleted meanwhile (nothing is stored then).
        """
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE items SET status = 'ready', error = NULL, processing_by = NULL,"
                " modalities = ?,"
                " transcript = ?, transcript_source = ?, duration_s = ?,"
                " transcript_vtt = COALESCE(?, transcript_vtt) WHERE seq = ?",
                (
                    json.dumps(modalities), transcript, transcript_source, duration_s,
                    transcript_vtt, seq,
                ),
            )  # fmt: skip
            if cur.rowcount == 0:
                return None
            insert_embeddings(conn, version, [(seq, e) for e in embeddings])
            # Processed again (a switch of versions meanwhile): the old segments go.
            replaced = delete_segments(conn, seq)
            segment_seqs = insert_segments(conn, seq, version, segments)
            record_change(conn, seq, INDEXED, replaced)
        self._forget(seq)
        return segment_seqs

    def mark_failed(self, seq: int, error: str, only_processing: bool = False) -> bool:
        """The item stays, failed with the reason, and is no longer searchable: vectors
        it had (of any version; its segments with theirs) go in the same transaction, and
        the change log takes it out of every replica's indexes. `only_processing`: not
        an item that is ready meanwhile (a processing that failed late, or twice)."""
        with self._db.transaction() as conn:
            failed = _fail(conn, seq, error, only_processing)
        self._forget(seq)
        return failed

    def fail_if_media_missing(
        self, seq: int, content_hash: str, missing: Callable[[str], bool], error: str
    ) -> bool:
        """Mark the item failed (as mark_failed) if it is still ready or processing with
        this content hash and `missing(content_hash)` (its media file is gone) holds,
        checked under the hash's lock: an upload of the same bytes cannot be putting the
        file in place meanwhile. True when it was marked failed."""
        with self._db.transaction(lock=_media_lock(content_hash)) as conn:
            row = conn.execute(
                f"SELECT status FROM items WHERE seq = ? AND content_hash = ?{self._db.for_update}",
                (seq, content_hash),
            ).fetchone()
            if row is None or row[0] not in ("ready", "processing") or not missing(content_hash):
                return False
            failed = _fail(conn, seq, error)
        self._forget(seq)
        return failed

    def media_in_use(self) -> dict[str, tuple[int, str]]:
        """content hash -> (seq, status) of every item with a media file."""
        rows = self._db.connection().execute(
            "SELECT content_hash, seq, status FROM items WHERE content_hash IS NOT NULL"
        )
        return {r[0]: (int(r[1]), r[2]) for r in rows}

    def drop_unowned_vectors(self) -> tuple[list[int], int, int]:
        """Vectors and segments no live item owns: those of items that are gone (only a
        write with foreign keys off, such as the sqlite3 shell, leaves them) or failed
        (stored before failing dropped them), and vectors of segments that are gone.
        Removed in one transaction, with a DELETED change per item so every replica's
        indexes drop them too. Returns (the items' seqs, vectors removed, segments
        removed)."""
        unowned = (
            "NOT EXISTS (SELECT 1 FROM items i WHERE i.seq = {0}.item_seq AND i.status <> 'failed')"
        )
        with self._db.transaction() as conn:
            seqs: set[int] = set()
            for table in ("embeddings", "segments"):
                sql = f"SELECT DISTINCT item_seq FROM {table} WHERE {unowned.format(table)}"
                seqs |= {int(r[0]) for r in conn.execute(sql)}
            vectors = segments = 0
            if seqs:
                sql = f"DELETE FROM embeddings WHERE {unowned.format('embeddings')}"
                vectors += conn.execute(sql).rowcount
                for seq in sorted(seqs):
                    vectors += conn.execute(
                        "SELECT COUNT(*) FROM segment_embeddings WHERE segment_seq IN"
                        " (SELECT seq FROM segments WHERE item_seq = ?)",
                        (seq,),
                    ).fetchone()[0]
                    cut = delete_segments(conn, seq)
                    segments += len(cut)
                    record_change(conn, seq, DELETED, cut)
            vectors += conn.execute(
                "DELETE FROM segment_embeddings WHERE NOT EXISTS"
                " (SELECT 1 FROM segments s WHERE s.seq = segment_embeddings.segment_seq)"
            ).rowcount
        return sorted(seqs), int(vectors), segments

    def mark_shared(self, seq: int) -> bool:
        """Another upload of the same bytes is told this item in processing exists: its
        failure must then keep it (failed), not delete it. False when it is no longer in
        processing (ready, failed or gone: that upload looks again)."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "UPDATE items SET shared = 1 WHERE seq = ? AND status = 'processing'", (seq,)
            )
        return cur.rowcount > 0

    def retry_failed(
        self,
        seq: int,
        content_hash: str,
        processing_by: str,
        before_update: Callable[[], None],
        asr: bool = True,
    ) -> ItemRow | None:
        """A failed item processed again, in place, for a new upload of its bytes: its id
        was answered before (202), so it is kept, and marked shared (a failure again
        keeps it, failed). `before_update` (putting the file back if it is gone) runs
        under the content hash's lock. `asr`: the new upload's, kept for a replica that
        takes the processing over. None when it is no longer failed."""
        with self._db.transaction(lock=_media_lock(content_hash)) as conn:
            found = conn.execute(
                f"SELECT status FROM items WHERE seq = ?{self._db.for_update}", (seq,)
            ).fetchone()
            if found is None or found[0] != "failed":
                return None
            before_update()
            conn.execute(
                "UPDATE items SET status = 'processing', error = NULL, processing_by = ?,"
                " shared = 1, asr = ? WHERE seq = ?",
                (processing_by, int(asr), seq),
            )
            # Read in the same transaction, as create() does: a DELETE right after the
            # commit made this None, taken for "no longer failed", and the upload's file,
            # moved into the store, was looked for where it had been (422).
            row = conn.execute(f"SELECT {_COLUMNS} FROM items WHERE seq = ?", (seq,)).fetchone()
        return ItemRow.from_row(row)

    def delete(self, seq: int, keep_shared: bool = False) -> tuple[ItemRow, list[int]] | None:
        """Delete the item, its metadata, its segments and all their embeddings; returns
        what was deleted: the item and its segments' seqs. `keep_shared` (a failed
        processing removing its item): not an item another upload was told exists
        (mark_shared), nor one that is no longer processing (another replica that took
        it over finished it); None is returned then."""
        with self._db.transaction() as conn:
            # The item's row first, locked: whatever else changes this item (processing
            # finishing on another replica, another upload sharing it) waits for it.
            found = conn.execute(
                f"SELECT {_COLUMNS}, shared FROM items WHERE seq = ?{self._db.for_update}", (seq,)
            ).fetchone()
            if found is None or (keep_shared and (found[-1] or found[3] != "processing")):
                return None
            row = tuple(found)[:-1]
            segment_seqs = delete_segments(conn, seq)
            conn.execute("DELETE FROM embeddings WHERE item_seq = ?", (seq,))
            conn.execute("DELETE FROM item_metadata WHERE item_seq = ?", (seq,))
            conn.execute("DELETE FROM items WHERE seq = ?", (seq,))
            record_change(conn, seq, DELETED, segment_seqs)
        self._forget(seq)
        return ItemRow.from_row(row), segment_seqs

    # -- reads -------------------------------------------------------------------------
    def _one(self, where: str, value: object) -> ItemRow | None:
        sql = f"SELECT {_COLUMNS} FROM items WHERE {where} = ?"
        row = self._db.connection().execute(sql, (value,)).fetchone()
        return ItemRow.from_row(row) if row else None

    def get(self, item_id: str) -> ItemRow | None:
        return self._one("id", item_id)

    def get_by_seq(self, seq: int) -> ItemRow | None:
        return self._one("seq", seq)

    def get_by_hash(self, content_hash: str) -> ItemRow | None:
        return self._one("content_hash", content_hash)

    def transcript_vtt(self, seq: int) -> str | None:
        """The item's timed transcript (WebVTT), when it has one."""
        row = (
            self._db.connection()
            .execute("SELECT transcript_vtt FROM items WHERE seq = ?", (seq,))
            .fetchone()
        )
        return row[0] if row else None

    def content_hashes(self) -> set[str]:
        """The media files items name (DATA_DIR/media/<hash>)."""
        rows = self._db.connection().execute(
            "SELECT content_hash FROM items WHERE content_hash IS NOT NULL"
        )
        return {r[0] for r in rows}

    def hash_in_use(self, content_hash: str) -> bool:
        row = (
            self._db.connection()
            .execute("SELECT 1 FROM items WHERE content_hash = ?", (content_hash,))
            .fetchone()
        )
        return row is not None

    def restore_media(self, content_hash: str, put_back: Callable[[], None]) -> bool:
        """Call `put_back()` (an upload of these bytes moved into place) if an item still
        names them, under the hash's lock: a delete on any replica cannot remove the
        last such item and its file in between. True when an item names them."""
        return self._under_media_lock(content_hash, put_back, if_named=True)

    def remove_media_if_unused(self, content_hash: str, remove: Callable[[str], None]) -> bool:
        """Call `remove(content_hash)` (unlink the media file) if no item names it, under
        the hash's lock: an upload of the same bytes on any replica cannot put its file in
        place and create its row in between. True when removed."""
        return self._under_media_lock(content_hash, partial(remove, content_hash), if_named=False)

    def _under_media_lock(
        self, content_hash: str, action: Callable[[], None], if_named: bool
    ) -> bool:
        """Run `action` under the hash's lock when whether an item names the hash is
        `if_named`; True when it ran."""
        with self._db.transaction(lock=_media_lock(content_hash)) as conn:
            found = conn.execute(
                "SELECT 1 FROM items WHERE content_hash = ?", (content_hash,)
            ).fetchone()
            if (found is not None) != if_named:
                return False
            action()
            return True

    def by_seqs(self, seqs: Iterable[int]) -> dict[int, ItemRow]:
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
        conn = self._db.connection()
        fetched: list[ItemRow] = []
        for start in range(0, len(missing), MAX_PARAMS):
            chunk = missing[start : start + MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT {_COLUMNS} FROM items WHERE seq IN ({marks})", chunk):
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
        self.forget([seq])

    def forget(self, seqs: Iterable[int]) -> None:
        """Drop items from the ready-row cache: deleted or failed through another
        replica (this one hears of it from the change log)."""
        with self._cache_lock:
            for seq in seqs:
                self._ready_rows.pop(int(seq), None)

    def page(
        self,
        kind: str | None,
        limit: int,
        before_seq: int | None,
        filters: dict[str, Any] | None = None,
    ) -> list[ItemRow]:
        """Up to `limit` items, newest first; `before_seq` continues a listing (stable
        under inserts). `filters`: only items whose metadata has every key with exactly
        that value, as searches filter (at most MAX_LIST_FILTER_KEYS keys)."""
        where: list[str] = []
        args: list[Any] = []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if filters:
            if len(filters) > MAX_LIST_FILTER_KEYS:
                raise ValueError(f"a listing filters by at most {MAX_LIST_FILTER_KEYS} keys")
            pairs = [(key, _meta_value(value)) for key, value in filters.items()]
            marks = ",".join("(?,?)" for _ in pairs)
            where.append(
                f"seq IN (SELECT item_seq FROM item_metadata WHERE (key, value) IN (VALUES {marks})"
                " GROUP BY item_seq HAVING COUNT(*) = ?)"
            )
            args += [*(x for pair in pairs for x in pair), len(pairs)]
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = f"SELECT {_COLUMNS} FROM items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [ItemRow.from_row(r) for r in self._db.connection().execute(sql, args)]

    def adopt_processing(self, owner: str, live: list[str]) -> list[ItemRow]:
        """Items left `processing` by API replicas not in `live` (dead, or by an earlier
        run): now `owner`'s to process, in seq order."""
        # Not "NOT IN ()" for no live replica: SQL has no empty list, and NOT IN (NULL)
        # is never true.
        marks = ",".join("?" * len(live))
        owner_gone = f" AND (processing_by IS NULL OR processing_by NOT IN ({marks}))"
        owner_gone = owner_gone if live else ""
        with self._db.transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM items WHERE status = 'processing'{owner_gone}"
                f" ORDER BY seq{self._db.skip_locked}",
                live,
            ).fetchall()
            taken = [ItemRow.from_row(r) for r in rows]
            conn.executemany(
                "UPDATE items SET processing_by = ? WHERE seq = ?", [(owner, r.seq) for r in taken]
            )
        return taken

    def processing_of(self, owner: str, created_before: str) -> list[ItemRow]:
        """Items `processing` by `owner`, created before that time (RFC 3339), seq order."""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM items WHERE status = 'processing' AND processing_by = ?"
            " AND created_at < ? ORDER BY seq",
            (owner, created_before),
        )
        return [ItemRow.from_row(r) for r in rows]

    def without_asr(self, seqs: Sequence[int]) -> set[int]:
        """Those of `seqs` uploaded with `asr=false` (no speech recognition)."""
        found: set[int] = set()
        conn = self._db.connection()
        for start in range(0, len(seqs), MAX_PARAMS):  # a crash mid-import: many at once
            chunk = list(seqs[start : start + MAX_PARAMS])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT seq FROM items WHERE asr = 0 AND seq IN ({marks})", chunk)
            found.update(int(r[0]) for r in rows)
        return found

    def with_status(self, status: str) -> list[ItemRow]:
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM items WHERE status = ? ORDER BY seq", (status,)
        )
        return [ItemRow.from_row(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        rows = self._db.connection().execute("SELECT status, COUNT(*) FROM items GROUP BY status")
        return {status: int(n) for status, n in rows}

    def count(self) -> int:
        return int(self._db.connection().execute("SELECT COUNT(*) FROM items").fetchone()[0])

    # -- what training and switching versions read ---------------------------------------
    def training_clips(self) -> list[TrainingClip]:
        """Ready media items with pictures and sound, oldest first, with their timed
        transcripts (uploaded or from speech recognition): the training worker's data."""
        rows = self._db.connection().execute(
            "SELECT seq, id, content_hash, duration_s, transcript, transcript_vtt FROM items"
            " WHERE status = 'ready' AND content_hash IS NOT NULL"
            " AND modalities LIKE '%\"video\"%' AND modalities LIKE '%\"audio\"%'"
            " ORDER BY seq"
        )
        return [TrainingClip(*r) for r in rows]

    def count_with_sound_after(self, seq: int) -> int:
        """Ready items with sound whose seq is above `seq` (new since a training job)."""
        row = (
            self._db.connection()
            .execute(
                "SELECT COUNT(*) FROM items WHERE seq > ? AND status = 'ready'"
                " AND modalities LIKE '%\"audio\"%'",
                (seq,),
            )
            .fetchone()
        )
        return int(row[0])

    def last_seq(self) -> int:
        row = self._db.connection().execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()
        return int(row[0])

    # In these queries `e.version || ''` keeps SQLite off the primary key (version first),
    # which would scan every vector of the version for each item (quadratic: 2.9 s a
    # count at 10k items); it takes embeddings_item (the item's few vectors) instead.
    def lacking_embeddings(self, version: str, limit: int, after_seq: int = 0) -> list[ItemRow]:
        """Ready items with no embedding of `version` yet (seq order, from after_seq):
        what a switch to that version still has to embed."""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM items WHERE status = 'ready' AND seq > ?"
            " AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.item_seq = items.seq"
            " AND e.version || '' = ?) ORDER BY seq LIMIT ?",
            (after_seq, version, limit),
        )
        return [ItemRow.from_row(r) for r in rows]

    def lacking_segments(self, version: str, longer_than_s: float, limit: int) -> list[ItemRow]:
        """Ready sounds and videos longer than `longer_than_s` that have no segments (stored
        before moments, or while they were off), or whose segments lack vectors of
        `version`: what the segment backfill still has to do (seq order)."""
        rows = self._db.connection().execute(
            f"SELECT {_COLUMNS} FROM items WHERE status = 'ready' AND kind IN ('video', 'audio')"
            " AND duration_s > ? AND (NOT EXISTS (SELECT 1 FROM segments s"
            " WHERE s.item_seq = items.seq) OR EXISTS (SELECT 1 FROM segments s"
            " WHERE s.item_seq = items.seq AND NOT EXISTS (SELECT 1 FROM segment_embeddings e"
            " WHERE e.segment_seq = s.seq AND e.version || '' = ?))) ORDER BY seq LIMIT ?",
            (longer_than_s, version, limit),
        )
        return [ItemRow.from_row(r) for r in rows]

    def count_lacking_embeddings(self, version: str) -> int:
        row = (
            self._db.connection()
            .execute(
                "SELECT COUNT(*) FROM items WHERE status = 'ready' AND NOT EXISTS (SELECT 1"
                " FROM embeddings e WHERE e.item_seq = items.seq AND e.version || '' = ?)",
                (version,),
            )
            .fetchone()
        )
        return int(row[0])

    def seqs_matching(self, filters: dict[str, Any]) -> np.ndarray:
        """Seqs of items whose metadata has every key with exactly that value (int64, sorted)."""
        if not filters:
            raise ValueError("seqs_matching needs at least one key")
        # Items holding every (key, value) of a chunk: one row per key matched, counted.
        # Not one SELECT per key joined by INTERSECT: SQLite refuses more than 500 of those.
        pairs = [(key, _meta_value(value)) for key, value in filters.items()]
        conn = self._db.connection()
        found: set[int] | None = None
        for start in range(0, len(pairs), MAX_PARAMS // 2):
            chunk = pairs[start : start + MAX_PARAMS // 2]
            marks = ",".join("(?,?)" for _ in chunk)
            rows = conn.execute(
                f"SELECT item_seq FROM item_metadata WHERE (key, value) IN (VALUES {marks})"
                " GROUP BY item_seq HAVING COUNT(*) = ?",
                [*(x for pair in chunk for x in pair), len(chunk)],
            )
            seqs = {r[0] for r in rows}
            found = seqs if found is None else found & seqs
            if not found:
                break
        return np.array(sorted(found or ()), dtype=np.int64)


def _fail(conn: Connection, seq: int, error: str, only_processing: bool = False) -> bool:
    """Failed with `error`, its vectors (of every version) and segments gone and a
    DELETED change for the replicas, inside the caller's transaction."""
    cur = conn.execute(
        "UPDATE items SET status = 'failed', error = ?, processing_by = NULL WHERE seq = ?"
        + (" AND status = 'processing'" if only_processing else ""),
        (error, seq),
    )
    if not cur.rowcount:
        return False
    segment_seqs = delete_segments(conn, seq)
    conn.execute("DELETE FROM embeddings WHERE item_seq = ?", (seq,))
    record_change(conn, seq, DELETED, segment_seqs)
    return True
