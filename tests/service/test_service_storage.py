"""The store, on SQLite and PostgreSQL: items, metadata filters, embeddings, pagination,
models, durability, transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing, contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from old_schemas import sqlite_at_version

from service.storage import (
    ConstraintViolation,
    DuplicateContent,
    Embedding,
    ModelRow,
    NewItem,
    Storage,
    StorageError,
    UnknownVersion,
)


def unit(d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def embedding_counts(storage: Storage, version: str) -> dict[tuple[str, str], int]:
    rows = storage.db.connection().execute(
        "SELECT space, modality, COUNT(*) FROM embeddings WHERE version = ? GROUP BY 1, 2",
        (version,),
    )
    return {(space, modality): n for space, modality, n in rows}


def transcript_vtt(storage: Storage, seq: int) -> str | None:
    row = (
        storage.db.connection()
        .execute("SELECT transcript_vtt FROM items WHERE seq = ?", (seq,))
        .fetchone()
    )
    return row[0] if row else None


def video(content_hash: str, **meta: object) -> NewItem:
    return NewItem(kind="video", modalities=["video", "audio"], content_hash=content_hash,
                   metadata=dict(meta))  # fmt: skip


def test_sqlite_wal_mode_and_schema_version(tmp_path: Path) -> None:
    Storage(tmp_path / "db.sqlite").close()
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE state SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        Storage(tmp_path / "db.sqlite")


def test_create_get_and_same_content_is_one_item(storage: Storage) -> None:
    row = storage.items.create(video("h1", color="red"))
    assert row.status == "processing" and row.metadata == {"color": "red"}
    assert storage.items.get(row.id) == row == storage.items.get_by_hash("h1")
    with pytest.raises(DuplicateContent) as dup:
        storage.items.create(video("h1", color="blue"))
    assert dup.value.existing.id == row.id
    assert storage.items.count() == 1


def test_a_duplicate_leaves_the_uploaded_file_where_it_was(storage: Storage) -> None:
    """Moving the upload into place over the stored item's file, then failing the
    insert, left nothing to read when that item was deleted meanwhile and the upload
    tried again: it was refused as a file that does not exist."""
    moved: list[str] = []
    row = storage.items.create(video("h1"), before_insert=lambda: moved.append("first"))
    with pytest.raises(DuplicateContent) as dup:
        storage.items.create(video("h1"), before_insert=lambda: moved.append("second"))
    assert dup.value.existing.id == row.id and moved == ["first"]
    assert storage.items.delete(row.seq) is not None
    again = storage.items.create(video("h1"), before_insert=lambda: moved.append("again"))
    assert again.id != row.id and moved == ["first", "again"]


def test_ready_stores_embeddings_atomically_and_not_after_delete(storage: Storage) -> None:
    row = storage.items.create(video("h1"))
    emb = [Embedding("va", "video", unit(8, 1)), Embedding("va", "audio", unit(8, 2))]
    assert (
        storage.items.mark_ready(row.seq, "v1", emb, ["video", "audio"], "hi", "asr", 3.0, "WEBVTT")
        == []
    )  # stored, no segments (a short item)
    got = storage.items.get(row.id)
    assert (got.status, got.transcript, got.transcript_source) == ("ready", "hi", "asr")
    assert transcript_vtt(storage, row.seq) == "WEBVTT"
    np.testing.assert_array_equal(
        storage.embeddings.get(row.seq, "v1", "va", "audio"), emb[1].vector
    )
    assert embedding_counts(storage, "v1") == {("va", "video"): 1, ("va", "audio"): 1}

    other = storage.items.create(video("h2"))
    storage.items.delete(other.seq)
    assert storage.items.mark_ready(other.seq, "v1", emb, ["video"], None, None, None) is None
    assert embedding_counts(storage, "v1") == {("va", "video"): 1, ("va", "audio"): 1}


def test_delete_removes_item_metadata_and_embeddings(storage: Storage) -> None:
    row = storage.items.create(video("h1", tag="x"))
    storage.items.mark_ready(row.seq, "v1", [Embedding("va", "video", unit(8, 1))], ["video"],
                       None, None, None)  # fmt: skip
    deleted = storage.items.delete(row.seq)
    assert deleted is not None and deleted[0].id == row.id and deleted[1] == []
    assert storage.items.get(row.id) is None
    assert embedding_counts(storage, "v1") == {}
    assert len(storage.items.seqs_matching({"tag": "x"})) == 0
    assert not storage.items.hash_in_use("h1")
    assert storage.items.delete(row.seq) is None


def test_seqs_are_never_reused(storage: Storage) -> None:
    first = storage.items.create(video("h1"))
    storage.items.delete(first.seq)
    second = storage.items.create(video("h1"))
    assert second.seq > first.seq  # a FAISS id never comes back as another item


def test_metadata_filter_is_exact_and_typed(storage: Storage) -> None:
    a = storage.items.create(video("a", color="red", n=1))
    b = storage.items.create(video("b", color="red", n="1"))
    c = storage.items.create(video("c", color="blue", n=1, flag=True))
    assert storage.items.seqs_matching({"color": "red"}).tolist() == [a.seq, b.seq]
    assert storage.items.seqs_matching({"color": "red", "n": 1}).tolist() == [a.seq]
    assert storage.items.seqs_matching({"n": "1"}).tolist() == [b.seq]
    assert storage.items.seqs_matching({"flag": True}).tolist() == [c.seq]
    assert storage.items.seqs_matching({"flag": 1}).tolist() == []
    assert storage.items.seqs_matching({"missing": None}).tolist() == []


def test_a_number_matches_however_it_was_written(storage: Storage) -> None:
    # JSON has one number type: a Python client's 4.0 and a browser's 4 are one value.
    a = storage.items.create(video("a", fps=4.0, zero=-0.0, half=2.5))
    b = storage.items.create(video("b", fps=4, zero=0, half="2.5"))
    assert storage.items.seqs_matching({"fps": 4}).tolist() == [a.seq, b.seq]
    assert storage.items.seqs_matching({"fps": 4.0}).tolist() == [a.seq, b.seq]
    assert storage.items.seqs_matching({"zero": 0.0}).tolist() == [a.seq, b.seq]
    assert storage.items.seqs_matching({"half": 2.5}).tolist() == [a.seq]
    assert storage.items.seqs_matching({"fps": "4"}).tolist() == []  # a string is not
    shown = storage.items.get(a.id)
    assert shown is not None and shown.metadata == {"fps": 4.0, "zero": -0.0, "half": 2.5}


def test_numbers_stored_by_an_older_version_are_found_after_the_upgrade(
    database: str | Path,
) -> None:
    # Version 4 kept 4.0 as the text "4.0": the upgrade rewrites it the way filters write.
    storage = Storage(database)
    item = storage.items.create(video("old"))
    stored = {"f": "4.0", "neg": "-12.0", "z": "-0.0", "s": '"4.0"', "h": "4.5", "e": "1e+16"}
    with storage.db.transaction() as conn:
        for key, text in stored.items():
            conn.execute("INSERT INTO item_metadata (item_seq, key, value) VALUES (?, ?, ?)",
                         (item.seq, key, text))  # fmt: skip
        conn.execute("ALTER TABLE items DROP COLUMN filename")  # as version 4 had it
        conn.execute("ALTER TABLE heartbeats DROP COLUMN serving")
        conn.execute("ALTER TABLE items DROP COLUMN asr")
        conn.execute("ALTER TABLE items DROP COLUMN shared")
        conn.execute("UPDATE state SET value = '4' WHERE key = 'schema_version'")
    storage.close()
    storage = Storage(database)
    try:
        assert storage.migrated_from == 4
        for key, value in {"f": 4, "neg": -12, "z": 0, "s": "4.0", "h": 4.5, "e": 1e16}.items():
            assert storage.items.seqs_matching({key: value}).tolist() == [item.seq], key
        rows = storage.db.connection().execute(
            "SELECT key, value FROM item_metadata WHERE item_seq = ?", (item.seq,)
        )
        assert dict(rows) == {"f": "4", "neg": "-12", "z": "0", "s": '"4.0"', "h": "4.5",
                              "e": "1e+16"}  # fmt: skip
    finally:
        storage.close()


def test_an_items_file_name_is_kept_and_older_items_have_none(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite_at_version(path, 5)  # before file names were kept
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO items (id, kind, status, content_hash, modalities, created_at)"
            " VALUES ('old', 'video', 'ready', 'h0', '[\"video\"]', '2026-12-01T00:00:00Z')"
        )
        conn.commit()
    storage = Storage(path)
    try:
        assert storage.migrated_from == 5
        old = storage.items.get("old")
        assert old is not None and old.filename is None
        new = storage.items.create(replace(video("h1"), filename="Strand é 2026.mp4"))
        assert new.filename == "Strand é 2026.mp4"
        seqs = storage.items.create_ready([(replace(video("h2"), filename="b.wav"), [])], "v1")
        shown = storage.items.by_seqs({new.seq, *seqs})
        assert sorted(r.filename for r in shown.values()) == ["Strand é 2026.mp4", "b.wav"]
        assert [r.filename for r in storage.items.page(None, 10, None)] == [
            "b.wav", "Strand é 2026.mp4", None,
        ]  # fmt: skip
    finally:
        storage.close()


def test_a_listing_filtered_by_metadata_pages_through_only_the_matching_items(
    storage: Storage,
) -> None:
    rows = [
        storage.items.create(video(f"f{i}", folder="a/b" if i % 2 else "c", take=i % 3))
        for i in range(9)
    ]
    in_ab = [r.seq for r in rows if r.metadata["folder"] == "a/b"][::-1]  # newest first
    first = storage.items.page(None, 2, None, {"folder": "a/b"})
    assert [r.seq for r in first] == in_ab[:2]
    rest = storage.items.page(None, 10, first[-1].seq, {"folder": "a/b"})
    assert [r.seq for r in rest] == in_ab[2:]
    both = storage.items.page(None, 10, None, {"folder": "a/b", "take": 0.0})  # 0 == 0.0
    assert [r.seq for r in both] == [r.seq for r in rows[::-1] if r.metadata == {
        "folder": "a/b", "take": 0}]  # fmt: skip
    assert storage.items.page("text", 10, None, {"folder": "a/b"}) == []
    assert storage.items.page(None, 10, None, {"folder": "nowhere"}) == []


def test_list_is_newest_first_and_pages_stay_stable_under_inserts(storage: Storage) -> None:
    rows = [storage.items.create(video(f"h{i}")) for i in range(7)]
    text = storage.items.create(NewItem(kind="text", modalities=["text"], text="hello"))
    page1 = storage.items.page(None, 3, None)
    assert [r.seq for r in page1] == [text.seq, rows[6].seq, rows[5].seq]
    storage.items.create(video("new"))  # arrives between pages: must not shift page 2
    page2 = storage.items.page(None, 3, page1[-1].seq)
    assert [r.seq for r in page2] == [rows[4].seq, rows[3].seq, rows[2].seq]
    assert [r.kind for r in storage.items.page("text", 10, None)] == ["text"]


def test_embeddings_read_back_in_any_order(storage: Storage) -> None:
    seqs, vectors = [], []
    for i in range(25):
        row = storage.items.create(video(f"h{i}"))
        vectors.append(unit(16, i))
        seqs.append(row.seq)
        storage.items.mark_ready(row.seq, "v1", [Embedding("vat", "video", vectors[-1])], ["video"],
                           None, None, None)  # fmt: skip
    assert sorted(storage.embeddings.seqs("v1", "vat", "video").tolist()) == seqs
    wanted = np.array([seqs[5], seqs[0], seqs[24]])
    got = storage.embeddings.vectors("v1", "vat", "video", wanted)
    np.testing.assert_array_equal(got, np.stack([vectors[5], vectors[0], vectors[24]]))
    with pytest.raises(KeyError):
        storage.embeddings.vectors("v1", "vat", "video", np.array([10_000]))


def test_models_one_active_at_a_time(storage: Storage) -> None:
    storage.models.add(ModelRow("a", "2026-01-01T00:00:00Z", {"name": "tiny"}, {}, None, True))
    storage.models.add(ModelRow("b", "2026-01-02T00:00:00Z", {"name": "tiny"}, {"r": 1}, "a", True))
    assert storage.models.active().version == "b"
    storage.models.activate("a")
    assert [(m.version, m.active) for m in storage.models.all()] == [("b", False), ("a", True)]


def test_no_vectors_are_written_for_a_version_deleted_meanwhile(storage: Storage) -> None:
    # A switch called off goes on embedding until its next check; a DELETE of its version
    # in between left the vectors it wrote after the delete as orphans, for good.
    storage.models.add(ModelRow("v1", "2026-12-07T00:00:00Z", {}, {}, None, True))
    storage.models.add(ModelRow("v2", "2026-12-07T00:00:01Z", {}, {}, "v1", False))
    seq = storage.items.create_ready(
        [(NewItem(kind="text", modalities=["text"], status="ready", text="a"),
          [Embedding("vat", "text", np.ones(4, np.float32))])], "v1"
    )[0]  # fmt: skip
    vector = Embedding("vat", "text", np.full(4, 0.5, np.float32))
    assert storage.embeddings.add_for_stored("v2", [(seq, vector)]) == 1
    storage.models.delete("v2")
    assert storage.embeddings.get(seq, "v2", "vat", "text") is None
    with pytest.raises(UnknownVersion):
        storage.embeddings.add_for_stored("v2", [(seq, vector)])
    with pytest.raises(UnknownVersion):
        storage.segments.add_for_stored("v2", [(seq, vector)])
    assert storage.embeddings.get(seq, "v2", "vat", "text") is None
    assert storage.embeddings.get(seq, "v1", "vat", "text") is not None


def test_threads_each_get_a_connection_and_writes_serialise(storage: Storage) -> None:
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(20):
                storage.items.create(video(f"t{offset}-{i}"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and storage.items.count() == 80


def test_a_broken_constraint_rolls_back_and_the_database_stays_usable(storage: Storage) -> None:
    with pytest.raises(ConstraintViolation), storage.db.transaction() as conn:
        conn.execute("INSERT INTO items (id, kind, status, modalities, created_at)"
                     " VALUES ('x', 'text', 'ready', '[]', 'now')")  # fmt: skip
        conn.execute("INSERT INTO item_metadata (item_seq, key, value) VALUES (999, 'k', '1')")
    assert storage.items.get("x") is None  # the whole transaction rolled back
    assert storage.items.create(video("after")).status == "processing"


def test_a_failed_commit_rolls_back_and_the_connection_stays_usable(tmp_path: Path) -> None:
    # A deferred foreign key is checked at COMMIT: the commit itself fails. SQLite then
    # keeps the transaction open; left so, the thread's next BEGIN would fail forever.
    storage = Storage(tmp_path / "db.sqlite")
    with pytest.raises(ConstraintViolation), storage.db.transaction() as conn:
        conn.execute("PRAGMA defer_foreign_keys=ON")
        conn.execute("INSERT INTO item_metadata (item_seq, key, value) VALUES (999, 'k', '1')")
    assert not storage.db.connection().in_transaction
    assert storage.items.seqs_matching({"k": 1}).tolist() == []  # rolled back
    assert storage.items.create(video("after")).status == "processing"
    storage.close()


def test_metadata_at_its_entry_bound_is_stored_on_either_engine_and_past_it_refused(
    storage: Storage,
) -> None:
    """PostgreSQL's index on (key, value) refused an entry over 2,704 bytes with an error
    nothing mapped (a 500 for an upload SQLite took); both engines now store up to one
    bound, and the API refuses past it in a sentence."""
    import random
    import string

    from pydantic import ValidationError

    from service.errors import InvalidRequest
    from service.json_fields import check_metadata
    from service.schemas import TextItemIn
    from service.storage import MAX_METADATA_ENTRY_BYTES, metadata_entry_bytes

    key = "notes"
    # Letters at random: PostgreSQL compresses an index entry, and repeated text would fit.
    letters = random.Random(0).choices(string.ascii_letters, k=MAX_METADATA_ENTRY_BYTES)
    value = "".join(letters)[: MAX_METADATA_ENTRY_BYTES - len(key) - 2]  # 2: its quotes
    assert metadata_entry_bytes(key, value) == MAX_METADATA_ENTRY_BYTES
    row = storage.items.create(
        NewItem(kind="text", modalities=["text"], text="a", metadata={key: value})
    )
    storage.items.mark_ready(row.seq, "v", [], ["text"], None, None, None)
    (found,) = storage.items.page(None, 10, None, {key: value})
    assert found.metadata == {key: value}
    for longer in (value + "x", value[:-5] + "é"):  # é: 6 bytes, as stored (\u00e9)
        with pytest.raises(ValidationError, match="too long to store"):
            TextItemIn.model_validate({"text": "a", "metadata": {key: longer}})
        with pytest.raises(InvalidRequest, match=r"take 2,40[1-9] bytes, at most 2,400"):
            check_metadata({key: longer})


def test_a_version_another_replica_still_serves_is_not_deleted(storage: Storage) -> None:
    """Replica r1 switched to B; r2 is still building B's indexes and serves A. A DELETE
    of A, allowed since A was neither active nor the target, emptied r2's indexes at its
    next upkeep (nothing of A left to reconcile with) until its own swap."""
    from service.storage import ModelRow, VersionServed

    for version in ("A", "B"):
        storage.models.add(ModelRow(version, "2026-12-07T00:00:00Z", {}, {}, None, False))
    storage.models.activate("B")
    storage.heartbeats.beat("r1", "api", "B")
    storage.heartbeats.beat("r2", "api", "A")
    with pytest.raises(VersionServed) as served:
        storage.models.delete("A", replicas_within_s=30.0)
    assert served.value.replicas == ["r2"] and storage.models.get("A") is not None
    storage.heartbeats.beat("r2", "api", "B")  # its switch is done
    assert storage.models.delete("A", replicas_within_s=30.0) == 0
    assert storage.models.get("A") is None
    # The replica a DELETE comes through is not held up by its own heartbeat, which may
    # lag its swap by a beat (the active and target checks speak for it).
    storage.models.add(ModelRow("C", "2026-12-07T00:00:00Z", {}, {}, None, False))
    storage.heartbeats.beat("r1", "api", "C")
    assert storage.models.delete("C", replicas_within_s=30.0, asking="r1") == 0


def test_a_late_processing_failure_leaves_an_item_that_is_ready_alone(
    storage: Storage,
) -> None:
    """Two replicas processed one item (one took it over from the other, silent a
    while): the first finished it ready, and the second's failure then marked it
    failed and dropped its vectors, or deleted it: an upload answered 201, gone."""
    row = storage.items.create(video("late"))
    storage.items.mark_ready(row.seq, "v", [Embedding("va", "video", unit(8, 3))], ["video"],
                             None, None, 1.0)  # fmt: skip
    assert not storage.items.mark_failed(row.seq, "decode failed", only_processing=True)
    assert storage.items.delete(row.seq, keep_shared=True) is None
    kept = storage.items.get_by_seq(row.seq)
    assert kept is not None and kept.status == "ready"
    assert storage.embeddings.get(row.seq, "v", "va", "video") is not None
    assert storage.items.mark_failed(row.seq, "no longer embeddable")  # a switch's repair may


def test_an_item_another_replica_was_told_exists_is_kept_when_its_processing_fails(
    database: str | Path, storage: Storage
) -> None:
    """Replica A processes bytes X for a wait=true upload; replica B answers another
    upload of X with that item (200). The mark that B did lived in B's memory, so A's
    failure deleted the item B had acknowledged."""
    b = Storage(database)  # the other replica's own connection
    try:
        row = storage.items.create(video("x"))
        assert b.items.mark_shared(row.seq)
        assert storage.items.delete(row.seq, keep_shared=True) is None  # kept: B told it
        assert storage.items.get_by_seq(row.seq) is not None
        plain = storage.items.create(video("y"))
        assert storage.items.delete(plain.seq, keep_shared=True) is not None  # told nobody
        storage.items.mark_ready(row.seq, "v", [], ["video"], None, None, 1.0)
        assert not b.items.mark_shared(row.seq)  # ready now: B looks again instead
        assert storage.items.delete(row.seq) is not None  # a user's DELETE takes it
    finally:
        b.close()


def _delete_after_the_next_commit(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, which: Callable[[], int]
) -> None:
    """The next transaction commits, then the item `which()` names is deleted: a client's
    DELETE landing between a write's commit and the read that answers it."""
    real = storage.db.transaction

    @contextmanager
    def then_deleted(lock: str | None = None):  # type: ignore[no-untyped-def]
        with real(lock) as conn:
            yield conn
        monkeypatch.setattr(storage.db, "transaction", real)  # once
        assert storage.items.delete(which()) is not None

    monkeypatch.setattr(storage.db, "transaction", then_deleted)


def test_an_item_deleted_right_after_it_is_created_is_still_answered(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that saw an upload listed deleted it between its row's commit and the
    read that answered the upload: the read found nothing, and the upload was a 500
    (seen on PostgreSQL). The row is read in its own transaction now; what processing
    does next finds it deleted, as with any later delete."""

    def newest() -> int:
        return storage.db.connection().execute("SELECT max(seq) FROM items").fetchone()[0]

    _delete_after_the_next_commit(storage, monkeypatch, newest)
    row = storage.items.create(video("c" * 64))
    assert row.content_hash == "c" * 64 and storage.items.get_by_seq(row.seq) is None


def test_a_failed_item_retried_and_deleted_at_once_is_still_answered(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race for a failed item processed again for a new upload of its bytes:
    the read after the commit found nothing, taken for "no longer failed", and the
    upload's file, already moved into the store, was looked for where it had been: a
    valid upload answered 422 "no such file"."""
    failed = storage.items.create(video("d" * 64))
    assert storage.items.mark_failed(failed.seq, "a decoder crashed on it")
    _delete_after_the_next_commit(storage, monkeypatch, lambda: failed.seq)
    row = storage.items.retry_failed(failed.seq, "d" * 64, "here", lambda: None, asr=False)
    assert row is not None and row.seq == failed.seq and row.status == "processing"
    assert storage.items.get_by_seq(failed.seq) is None
