"""The worker's own bookkeeping, without training: automatic retraining and tidying."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, Storage
from service.worker.loop import Worker
from service.worker.versions import remove_unlisted_versions


def add_sounds(storage: Storage, n: int, kind: str = "audio") -> None:
    modalities = ["video", "audio"] if kind == "video" else [kind]
    for _ in range(n):
        row = storage.items.create(NewItem(kind=kind, modalities=modalities,
                                           content_hash=os.urandom(32).hex()))  # fmt: skip
        storage.items.mark_ready(row.seq, "v", [Embedding("va", kind, np.ones(2, np.float32))],
                                 modalities, None, None, 1.0)  # fmt: skip


def test_a_job_is_queued_after_n_new_items_with_sound(storage: Storage, tmp_path: Path) -> None:
    worker = Worker(Settings(data_dir=tmp_path, retrain_after_items=5), storage, "w")
    add_sounds(storage, 4)
    add_sounds(storage, 3, kind="image")  # no sound: never counts
    worker.look_after_queue()
    assert storage.jobs.all() == []
    add_sounds(storage, 1, kind="video")
    worker.look_after_queue()
    (job,) = storage.jobs.all()
    assert job.request["activate"] == "auto" and job.request["init"] == "active"
    assert "5 new items with sound" in job.request["trigger"]
    add_sounds(storage, 10)
    worker.look_after_queue()
    assert len(storage.jobs.all()) == 1  # not while one waits or runs
    storage.jobs.request_cancel(job.id)
    worker.look_after_queue()  # 10 new since that job was queued
    assert len(storage.jobs.all()) == 2
    storage.jobs.request_cancel(storage.jobs.latest().id)  # type: ignore[union-attr]
    add_sounds(storage, 4)
    worker.look_after_queue()
    assert len(storage.jobs.all()) == 2  # 4 new: not yet


def test_workers_are_seen_while_they_run(storage: Storage, tmp_path: Path) -> None:
    assert storage.heartbeats.live("worker", 30) == []
    storage.heartbeats.beat("host-8000", "api")  # an API replica is no worker
    Worker(Settings(data_dir=tmp_path), storage, "host:1").look_after_queue()
    assert storage.heartbeats.live("worker", 30) == ["host:1"]
    assert storage.heartbeats.live("worker", -1) == []  # seen, but not within the last second
    assert storage.heartbeats.live("api", 30) == ["host-8000"]


def test_off_by_default(storage: Storage, tmp_path: Path) -> None:
    add_sounds(storage, 50)
    Worker(Settings(data_dir=tmp_path), storage, "w").look_after_queue()
    assert storage.jobs.all() == []


def test_tidy_removes_what_no_job_or_version_needs(storage: Storage, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    live = storage.jobs.create({})
    done = storage.jobs.create({})
    storage.jobs.request_cancel(done.id)
    for name in (live.id, done.id, "job-unknown"):
        (settings.runs_dir / name).mkdir(parents=True)
    storage.models.add(ModelRow("listed", "2026-12-06T00:00:00Z", {}, {}, None, True))
    for name in ("listed", "orphan", "fresh-orphan"):
        (settings.models_dir / name).mkdir(parents=True)
    old = time.time() - 7200
    os.utime(settings.models_dir / "orphan", (old, old))
    Worker(settings, storage, "w").tidy()
    assert sorted(p.name for p in settings.runs_dir.iterdir()) == [live.id]
    # A version folder no row names yet may be one a worker is publishing right now.
    assert sorted(p.name for p in settings.models_dir.iterdir()) == ["fresh-orphan", "listed"]
    assert remove_unlisted_versions(settings.models_dir, storage, older_than_s=0) == [
        "fresh-orphan"
    ]


def test_training_threads_follow_the_setting_or_share_the_cores() -> None:
    from service.worker.train_process import threads_per_rank

    assert threads_per_rank(0, 1, cores=16) == 16  # auto: one process takes every core
    assert threads_per_rank(0, 4, cores=16) == 4  # auto: each rank its share
    assert threads_per_rank(0, 4, cores=2) == 1  # never below one
    assert threads_per_rank(3, 4, cores=16) == 3  # MMV_TRAIN_THREADS wins
    assert Settings(train_threads=2).train_threads == 2
    assert Settings().train_threads == 0
