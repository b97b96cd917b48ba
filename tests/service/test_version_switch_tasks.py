"""A switch's re-embedding tasks: sized by the windows they hold, and a task whose worker
died tried again item by item, so one file fails alone (real media pool, real storage;
the task function is a stand-in that crashes on one item)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pool_tasks
import pytest

import service.version_switch as switch_module
from model import load_config
from model.media import MediaLimits
from service.media_worker import MediaPool, ReembedJob, StoredItem
from service.settings import Settings
from service.storage import Embedding, ItemRow, ModelRow, NewItem, NewSegment, Storage
from service.version_switch import CHUNK_WINDOW_BYTES, SwitchStatus, VersionSwitch


def stored_items(storage: Storage, n: int, seconds: float = 5.0) -> list[ItemRow]:
    """Ready videos; one longer than a minute with its segments, as ingestion cuts it."""
    rows = []
    vector = [Embedding("va", "video", np.ones(4, np.float32))]
    for _ in range(n):
        digest = os.urandom(32).hex()
        row = storage.items.create(NewItem(kind="video", modalities=["video", "audio"],
                                           content_hash=digest, duration_s=seconds))  # fmt: skip
        segments = [NewSegment(t, t + 60.0, vector) for t in np.arange(0.0, seconds - 59, 60.0)]
        storage.items.mark_ready(row.seq, "v1", vector, ["video", "audio"], None, None,
                                 seconds, segments=segments)  # fmt: skip
        found = storage.items.get_by_seq(row.seq)
        assert found is not None
        rows.append(found)
    return rows


def test_a_worker_crash_fails_only_the_item_behind_it_not_its_chunk(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of 64 items whose one file crashed the worker failed the switch, which
    was tried again later on the same chunk, forever."""
    storage.models.add(ModelRow("v2", "2026-12-07T00:00:00Z", {}, {}, None, False))
    rows = stored_items(storage, 3)
    monkeypatch.setattr(switch_module, "embed_stored", pool_tasks.embeds_unless_bomb)
    pool = MediaPool(1)
    pool.start()
    try:
        switch = VersionSwitch(Settings(data_dir=tmp_path), storage, None, None, pool, None)  # type: ignore[arg-type]
        items = [StoredItem(r.seq, f"/media/{'bomb' if k == 1 else 'fine'}-{k}", r.content_hash,
                            ("video",), 4) for k, r in enumerate(rows)]  # fmt: skip
        job = ReembedJob(items, "", "v2", str(tmp_path / "cache"), MediaLimits())
        status, failed = SwitchStatus("v2", "embedding", total=3), {}
        switch._collect(pool.submit(pool_tasks.embeds_unless_bomb, job), job, status, failed)
    finally:
        pool.shutdown()
    assert list(failed) == [rows[1].seq] and "worker process die" in failed[rows[1].seq]
    assert status.done == 2 and status.failed_items == 1
    assert set(storage.embeddings.seqs("v2", "va", "video")) == {rows[0].seq, rows[2].seq}


def test_tasks_hold_at_most_their_share_of_windows(storage: Storage, tmp_path: Path) -> None:
    """64 one-hour items made one task of ~26 GB of windows (the tiny config)."""
    config = load_config("tiny")
    per_window = config.video.frames * config.video.crop_size**2 * 3 + config.audio_samples * 4
    hour = 3600.0
    settings = Settings(data_dir=tmp_path)
    rows = stored_items(storage, 6, seconds=hour) + stored_items(storage, 40, seconds=5.0)
    switch = VersionSwitch(settings, storage, None, None, None, None)  # type: ignore[arg-type]
    jobs = switch._jobs(SimpleNamespace(config=config, version="v2"), rows, 64)  # type: ignore[arg-type]
    assert [i.seq for j in jobs for i in j.items] == [r.seq for r in rows]  # all, in order
    for job in jobs:
        held = sum((i.n_windows or 10) * per_window for i in job.items)
        assert len(job.items) == 1 or held <= CHUNK_WINDOW_BYTES, (len(job.items), held)
    assert len(jobs) > 1 and len(jobs[-1].items) >= 40  # the short ones still go together


def test_uploads_during_a_pass_count_in_its_total(storage: Storage, tmp_path: Path) -> None:
    """Items stored with the old version while a pass runs are embedded in that pass:
    the progress read "1200 of 1000 items"."""
    storage.models.add(ModelRow("v2", "2026-12-07T00:00:00Z", {}, {}, None, False))
    assert storage.models.request_switch("v2")

    def text_item(words: str) -> None:
        row = storage.items.create(NewItem(kind="text", modalities=["text"], text=words))
        vector = [Embedding("vat", "text", np.ones(4, np.float32))]
        storage.items.mark_ready(row.seq, "v1", vector, ["text"], None, None, None)

    for n in range(3):
        text_item(f"stored before {n}")
    uploaded: list[int] = []

    def embed_texts(texts: list[str]) -> dict[str, np.ndarray]:
        if not uploaded:  # two uploads while the first page is embedded
            for n in range(2):
                text_item(f"uploaded meanwhile {n}")
            uploaded.append(2)
        return {"vat": np.ones((len(texts), 4), np.float32)}

    embedder = SimpleNamespace(version="v2", config=load_config("tiny"), embed_texts=embed_texts)
    switch = VersionSwitch(Settings(data_dir=tmp_path), storage, None, None, None, None)  # type: ignore[arg-type]
    status = SwitchStatus("v2", "embedding", total=storage.items.count_lacking_embeddings("v2"))
    assert status.total == 3
    switch._embed_lacking(embedder, status, {})  # type: ignore[arg-type]
    assert status.done == 5 and status.total == 5
