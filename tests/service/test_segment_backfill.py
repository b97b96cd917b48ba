"""The segment backfill (long items stored before moments, or under another version):
a task whose worker died is tried item by item, so only the file at fault is given up
on (real media pool, real storage and indexes; the task is a stand-in that crashes on
one file)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pool_tasks
import pytest

import service.segment_backfill as backfill_module
from indexer import IndexRegistry
from service.active_model import ActiveModel
from service.media_worker import MediaPool
from service.segment_backfill import SegmentBackfill
from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, Storage

LAYOUT = {"va": ["audio", "audio_segments"]}


def test_a_crashed_task_gives_up_only_on_the_item_at_fault(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash failed every item of its task (4 long items) until a restart: three
    good recordings never got their moments."""
    storage.models.add(ModelRow("v1", "2026-12-07T00:00:00Z", {}, {}, None, True))
    seqs = {}
    for name in ("fine-1", "bomb", "fine-2", "fine-3"):
        row = storage.items.create(NewItem(kind="audio", modalities=["audio"], content_hash=name))
        storage.items.mark_ready(row.seq, "v1", [Embedding("va", "audio", np.ones(4, np.float32))],
                                 ["audio"], None, None, 30.0)  # fmt: skip
        seqs[name] = row.seq
    registry = IndexRegistry(tmp_path / "indexes")
    registry.open(
        "v1",
        LAYOUT,
        {"va": 4},
        lambda space, modality: (np.zeros(0, np.int64), np.zeros((0, 4), np.float32)),
    )
    model = ActiveModel()
    embedder = SimpleNamespace(version="v1", config=SimpleNamespace(clip_seconds=4.0))
    model.use(embedder, registry)  # type: ignore[arg-type]
    monkeypatch.setattr(backfill_module, "embed_stored", pool_tasks.segments_unless_bomb)
    pool = MediaPool(1)
    pool.start()
    try:
        backfill = SegmentBackfill(Settings(data_dir=tmp_path), storage, model, pool,
                                   threading.Lock())  # fmt: skip
        backfill.run()
        assert list(backfill.failed) == [seqs["bomb"]]
        # Given up on until a restart, before: what failed may have been passing (a full
        # disk, a worker the kernel killed). It is tried again after a while.
        backfill.run()
        assert list(backfill.failed) == [seqs["bomb"]]
        monkeypatch.setenv("BOMB_DEFUSED", "1")  # the pool's new children see it
        pool.shutdown()
        pool.start()
        monkeypatch.setattr(backfill_module, "RETRY_GIVEN_UP_S", 0.0)
        backfill.run()
        assert backfill.failed == {}
    finally:
        pool.shutdown()
    for name in ("fine-1", "fine-2", "fine-3"):
        found, _ = storage.segments.vectors_of_item(seqs[name], "v1", "va", "audio")
        assert len(found) == 5, name  # 30 s: 10 s segments every 5 s
    assert registry.active.counts()["va/audio_segments"] == 20
    assert storage.items.lacking_segments("v1", 10.0, 10) == []
