"""The SQLite store: items, metadata filters, embeddings, pagination, models, durability."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from service.storage import DuplicateContent, Embedding, ModelRow, NewItem, Storage, StorageError


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    s = Storage(tmp_path / "db.sqlite")
    yield s
    s.close()


def unit(d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def video(content_hash: str, **meta: object) -> NewItem:
    return NewItem(kind="video", modalities=["video", "audio"], content_hash=content_hash,
                   metadata=dict(meta))  # fmt: skip


def test_wal_mode_and_schema_version(storage: Storage, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("UPDATE state SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        Storage(tmp_path / "db.sqlite")


def test_create_get_and_same_content_is_one_item(storage: Storage) -> None:
    row = storage.create_item(video("h1", color="red"))
    assert row.status == "processing" and row.metadata == {"color": "red"}
    assert storage.get_item(row.id) == row == storage.get_item_by_hash("h1")
    with pytest.raises(DuplicateContent) as dup:
        storage.create_item(video("h1", color="blue"))
    assert dup.value.existing.id == row.id
    assert storage.count_items() == 1


def test_ready_stores_embeddings_atomically_and_not_after_delete(storage: Storage) -> None:
    row = storage.create_item(video("h1"))
    emb = [Embedding("va", "video", unit(8, 1)), Embedding("va", "audio", unit(8, 2))]
    assert storage.mark_ready(row.seq, "v1", emb, ["video", "audio"], "hi", "asr", 3.0, "WEBVTT")
    got = storage.get_item(row.id)
    assert (got.status, got.transcript, got.transcript_source) == ("ready", "hi", "asr")
    assert storage.transcript_vtt(row.seq) == "WEBVTT"
    np.testing.assert_array_equal(
        storage.get_embedding(row.seq, "v1", "va", "audio"), emb[1].vector
    )
    assert storage.embedding_counts("v1") == {("va", "video"): 1, ("va", "audio"): 1}

    other = storage.create_item(video("h2"))
    storage.delete_item(other.seq)
    assert not storage.mark_ready(other.seq, "v1", emb, ["video"], None, None, None)
    assert storage.embedding_counts("v1") == {("va", "video"): 1, ("va", "audio"): 1}


def test_delete_removes_item_metadata_and_embeddings(storage: Storage) -> None:
    row = storage.create_item(video("h1", tag="x"))
    storage.mark_ready(row.seq, "v1", [Embedding("va", "video", unit(8, 1))], ["video"],
                       None, None, None)  # fmt: skip
    deleted = storage.delete_item(row.seq)
    assert deleted is not None and deleted.id == row.id
    assert storage.get_item(row.id) is None
    assert storage.embedding_counts("v1") == {}
    assert len(storage.seqs_matching({"tag": "x"})) == 0
    assert not storage.hash_in_use("h1")
    assert storage.delete_item(row.seq) is None


def test_seqs_are_never_reused(storage: Storage) -> None:
    first = storage.create_item(video("h1"))
    storage.delete_item(first.seq)
    second = storage.create_item(video("h1"))
    assert second.seq > first.seq  # a FAISS id never comes back as another item


def test_metadata_filter_is_exact_and_typed(storage: Storage) -> None:
    a = storage.create_item(video("a", color="red", n=1))
    b = storage.create_item(video("b", color="red", n="1"))
    c = storage.create_item(video("c", color="blue", n=1, flag=True))
    assert storage.seqs_matching({"color": "red"}).tolist() == [a.seq, b.seq]
    assert storage.seqs_matching({"color": "red", "n": 1}).tolist() == [a.seq]
    assert storage.seqs_matching({"n": "1"}).tolist() == [b.seq]
    assert storage.seqs_matching({"flag": True}).tolist() == [c.seq]
    assert storage.seqs_matching({"flag": 1}).tolist() == []
    assert storage.seqs_matching({"missing": None}).tolist() == []


def test_list_is_newest_first_and_pages_stay_stable_under_inserts(storage: Storage) -> None:
    rows = [storage.create_item(video(f"h{i}")) for i in range(7)]
    text = storage.create_item(NewItem(kind="text", modalities=["text"], text="hello"))
    page1 = storage.list_items(None, 3, None)
    assert [r.seq for r in page1] == [text.seq, rows[6].seq, rows[5].seq]
    storage.create_item(video("new"))  # arrives between pages: must not shift page 2
    page2 = storage.list_items(None, 3, page1[-1].seq)
    assert [r.seq for r in page2] == [rows[4].seq, rows[3].seq, rows[2].seq]
    assert [r.kind for r in storage.list_items("text", 10, None)] == ["text"]


def test_embeddings_read_back_in_any_order_and_in_chunks(storage: Storage) -> None:
    seqs, vectors = [], []
    for i in range(25):
        row = storage.create_item(video(f"h{i}"))
        vectors.append(unit(16, i))
        seqs.append(row.seq)
        storage.mark_ready(row.seq, "v1", [Embedding("vat", "video", vectors[-1])], ["video"],
                           None, None, None)  # fmt: skip
    assert sorted(storage.embedding_seqs("v1", "vat", "video").tolist()) == seqs
    wanted = np.array([seqs[5], seqs[0], seqs[24]])
    got = storage.embeddings_for("v1", "vat", "video", wanted)
    np.testing.assert_array_equal(got, np.stack([vectors[5], vectors[0], vectors[24]]))
    with pytest.raises(KeyError):
        storage.embeddings_for("v1", "vat", "video", np.array([10_000]))
    chunks = list(storage.iter_embeddings("v1", "vat", "video", batch=10))
    assert [len(s) for s, _ in chunks] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]), np.stack(vectors))


def test_models_one_active_at_a_time(storage: Storage) -> None:
    storage.add_model(ModelRow("a", "2026-01-01T00:00:00Z", {"name": "tiny"}, {}, None, True))
    storage.add_model(ModelRow("b", "2026-01-02T00:00:00Z", {"name": "tiny"}, {"r": 1}, "a", True))
    assert storage.active_model().version == "b"
    storage.set_active_model("a")
    assert [(m.version, m.active) for m in storage.list_models()] == [("b", False), ("a", True)]


def test_threads_each_get_a_connection_and_writes_serialise(storage: Storage) -> None:
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(20):
                storage.create_item(video(f"t{offset}-{i}"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and storage.count_items() == 80
