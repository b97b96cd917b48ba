"""Moving past one machine: a SQLite database copied whole into an empty PostgreSQL one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.copy_database import main as copy_main
from service.storage import Embedding, ModelRow, NewItem, NewSegment, Storage, StorageError


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


def filled(path: Path) -> Storage:
    storage = Storage(path)
    storage.models.add(ModelRow("v1", "2026-12-06T00:00:00Z", {"dim": 8}, {}, None, True))
    storage.models.add(ModelRow("v2", "2026-12-06T00:00:01Z", {"dim": 8}, {}, "v1", False))
    for n in range(5):
        row = storage.items.create(
            NewItem(kind="audio", modalities=["audio"], content_hash=f"h{n}", metadata={"n": n})
        )
        storage.items.mark_ready(
            row.seq, "v1", [Embedding("va", "audio", unit(n))], ["audio"], f"said {n}", "upload",
            30.0, segments=[NewSegment(0, 10, [Embedding("va", "audio", unit(100 + n))], "x")],
        )  # fmt: skip
    storage.items.delete(storage.items.get_by_hash("h2").seq)  # type: ignore[union-attr]
    storage.items.delete(storage.items.create(NewItem(kind="text", modalities=["text"])).seq)
    storage.jobs.create({"init": "active"})
    storage.state.set("demo_indexed", "1")
    return storage


def test_a_sqlite_database_is_copied_whole_into_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    source = filled(tmp_path / "db.sqlite")
    assert copy_main(["--from", str(tmp_path / "db.sqlite"), "--to", postgres_url]) == 0
    target = Storage(postgres_url)
    try:
        assert [i.id for i in target.items.page(None, 10, None)] == [
            i.id for i in source.items.page(None, 10, None)
        ]
        seqs = source.embeddings.seqs("v1", "va", "audio")
        assert np.array_equal(target.embeddings.seqs("v1", "va", "audio"), seqs)
        assert np.array_equal(
            target.embeddings.vectors("v1", "va", "audio", seqs),
            source.embeddings.vectors("v1", "va", "audio", seqs),
        )
        assert target.items.seqs_matching({"n": 3}).tolist() == [4]
        assert target.segments.count() == source.segments.count() == 4
        assert target.models.active().version == "v1"  # type: ignore[union-attr]
        assert [m.version for m in target.models.all()] == ["v2", "v1"]
        assert len(target.jobs.all()) == 1 and target.state.get("demo_indexed") == "1"
        # New rows continue after the copied ones: a seq is never reused (FAISS ids).
        new = target.items.create(NewItem(kind="audio", modalities=["audio"], content_hash="n"))
        assert new.seq == 7  # 6 was the last seq used (and deleted) on SQLite
        # Into a database that is no longer empty: refused, nothing written.
        with pytest.raises(StorageError, match="only into an empty database"):
            from service.storage.copy import copy_database

            copy_database(source, target)
        assert copy_main(["--from", str(tmp_path / "db.sqlite"), "--to", postgres_url]) == 2
    finally:
        source.close()
        target.close()
