"""The segments of long items (moments) in storage: written with the item, read back in
order with their vectors, found by item for filters, deleted with the item and with a
model version; and a database of the schema before them keeps every item."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from old_schemas import sqlite_at_version

from service.storage import Embedding, ModelRow, NewItem, NewSegment, Storage, now_rfc3339
from service.storage.migrations import SCHEMA_VERSION


def unit(d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def long_video(storage: Storage, content_hash: str, spans: list[tuple[float, float]]) -> tuple:
    row = storage.items.create(
        NewItem(kind="video", modalities=["video", "audio"], content_hash=content_hash)
    )
    segments = [
        NewSegment(
            start,
            end,
            [
                Embedding("va", "audio", unit(8, 10 * n)),
                Embedding("va", "video", unit(8, 10 * n + 1)),
            ],
            text=f"part {n}",
        )
        for n, (start, end) in enumerate(spans)
    ]
    whole = [Embedding("va", "audio", unit(8, 99)), Embedding("va", "video", unit(8, 98))]
    seqs = storage.items.mark_ready(row.seq, "v1", whole, ["video", "audio"], None, None, 25.0,
                                    segments=segments)  # fmt: skip
    return row, seqs, segments


def test_segments_are_stored_with_the_item_and_read_back_in_order(storage: Storage) -> None:
    row, seqs, segments = long_video(storage, "h1", [(0, 10), (5, 15), (10, 20), (15, 25)])
    assert seqs is not None and len(seqs) == 4
    got = storage.segments.of_item(row.seq)
    assert [(s.start_s, s.end_s, s.text) for s in got] == [
        (0, 10, "part 0"), (5, 15, "part 1"), (10, 20, "part 2"), (15, 25, "part 3")
    ]  # fmt: skip
    assert [s.seq for s in got] == seqs and {s.item_seq for s in got} == {row.seq}
    rows, vectors = storage.segments.vectors_of_item(row.seq, "v1", "va", "audio")
    assert [r.seq for r in rows] == seqs
    np.testing.assert_array_equal(vectors[2], segments[2].embeddings[0].vector)
    np.testing.assert_array_equal(
        storage.segments.vectors("v1", "va", "video", np.array(seqs[::-1])),
        np.stack([s.embeddings[1].vector for s in segments[::-1]]),
    )
    assert sorted(storage.segments.seqs("v1", "va", "audio").tolist()) == seqs
    assert storage.segments.by_seqs([seqs[1]])[seqs[1]].start_s == 5
    other, other_seqs, _ = long_video(storage, "h2", [(0, 10), (5, 12)])
    assert sorted(storage.segments.seqs_of_items(np.array([other.seq])).tolist()) == other_seqs
    with pytest.raises(KeyError, match="segment"):
        storage.segments.vectors("v1", "va", "audio", np.array([10_000]))


def test_deleting_an_item_removes_all_its_segments_at_once(storage: Storage) -> None:
    row, seqs, _ = long_video(storage, "h1", [(0, 10), (5, 15), (10, 20)])
    _, keep_seqs, _ = long_video(storage, "h2", [(0, 10), (5, 12)])
    deleted = storage.items.delete(row.seq)
    assert deleted is not None and deleted[1] == seqs
    assert storage.segments.of_item(row.seq) == []
    assert sorted(storage.segments.seqs("v1", "va", "audio").tolist()) == keep_seqs
    assert storage.segments.count() == 2


def test_re_indexing_adds_vectors_only_for_segments_that_still_exist(storage: Storage) -> None:
    _, seqs, _ = long_video(storage, "h1", [(0, 10), (5, 15)])
    storage.models.add(ModelRow("v2", now_rfc3339(), {}, {}, None, False))
    written = storage.segments.add_for_stored(
        "v2",
        [
            (seqs[0], Embedding("va", "audio", unit(8, 5))),
            (10_000, Embedding("va", "audio", unit(8, 6))),  # no such segment
        ],
    )
    assert written == 1
    assert storage.segments.seqs("v2", "va", "audio").tolist() == [seqs[0]]
    # Deleting a model version takes its segment vectors with it.
    storage.models.delete("v2")
    assert storage.segments.seqs("v2", "va", "audio").size == 0
    assert len(storage.segments.seqs("v1", "va", "audio")) == 2


def test_a_version_2_database_gains_segments_keeping_every_item(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sqlite_at_version(path, 2)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO items (id, kind, status, modalities, created_at)"
        " VALUES ('it_old', 'audio', 'ready', '[\"audio\"]', '2026-01-01T00:00:00Z')"
    )
    conn.commit()
    conn.close()
    storage = Storage(path)
    try:
        assert storage.migrated_from == 2 and SCHEMA_VERSION >= 3
        assert storage.items.get("it_old") is not None
        assert storage.segments.count() == 0
    finally:
        storage.close()
