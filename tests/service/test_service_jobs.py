"""Training jobs and model versions in storage: claims, leases, cancels, switching,
and the migration from the schema before them."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from old_schemas import sqlite_at_version

from service.routes.training import job_view
from service.storage import (
    SCHEMA_VERSION,
    Embedding,
    ModelRow,
    NewItem,
    Storage,
    StorageError,
    VersionServed,
)
from service.storage.jobs import MAX_ATTEMPTS


def model_row(version: str, active: bool = False) -> ModelRow:
    return ModelRow(version, "2026-12-06T00:00:00Z", {}, {}, None, active)


def test_a_version_1_database_is_migrated_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    sqlite_at_version(path, 1)  # the tables as the service before the worker made them
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO state (key, value) VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO items (id, kind, status, modalities, created_at)"
            " VALUES ('kept', 'text', 'ready', '[\"text\"]', '2026-01-01T00:00:00Z')"
        )
        conn.execute(
            "INSERT INTO jobs (id, status, created_at, updated_at)"
            " VALUES ('old-job', 'failed', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"
        )
        conn.execute(
            "INSERT INTO models (version, created_at, config, active)"
            " VALUES ('v1', '2026-01-01T00:00:00Z', '{}', 1)"
        )
    conn.close()
    storage = Storage(path)
    assert storage.migrated_from == 1
    assert storage.state.get("schema_version") == str(SCHEMA_VERSION)
    item = storage.items.get("kept")
    assert item is not None and item.status == "ready"
    job = storage.jobs.get("old-job")
    assert job is not None and job.status == "failed" and job.attempts == 0 and job.data == {}
    active = storage.models.active()
    assert active is not None and active.version == "v1" and active.job_id is None
    storage.close()
    assert Storage(path).migrated_from == SCHEMA_VERSION  # nothing left to do


def _open(location: str | Path) -> int:
    storage = Storage(location)
    version = int(storage.state.get("schema_version") or 0)
    storage.close()
    return version


def test_processes_opening_a_new_database_together_migrate_it_once(database: str | Path) -> None:
    """The API replicas and workers start at the same moment on an empty database."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_open, [database] * 8)
    assert versions == [SCHEMA_VERSION] * 8


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "db.sqlite")
    storage.state.set("schema_version", str(SCHEMA_VERSION + 1))
    storage.close()
    with pytest.raises(StorageError, match="newer than this service"):
        Storage(tmp_path / "db.sqlite")


def test_two_workers_never_claim_the_same_job(storage: Storage) -> None:
    created = {storage.jobs.create({"init": "active"}).id for _ in range(20)}
    claimed: list[list[str]] = [[], [], [], []]

    def worker(n: int) -> None:
        # Each thread has its own connection: as separate processes would.
        while (job := storage.jobs.claim(f"worker-{n}", lease_s=60)) is not None:
            claimed[n].append(job.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [j for c in claimed for j in c]
    assert sorted(every) == sorted(created)  # each once, none lost
    assert all(storage.jobs.get(j).lease_owner is not None for j in every)  # type: ignore[union-attr]


def test_claims_go_oldest_first_and_a_lease_is_renewed_by_heartbeat(storage: Storage) -> None:
    first = storage.jobs.create({"n": 1})
    storage.jobs.create({"n": 2})
    job = storage.jobs.claim("w", lease_s=30)
    assert job is not None and job.id == first.id and job.status == "running"
    assert job.attempts == 1 and job.started_at is not None
    beat = storage.jobs.heartbeat(job.id, "w", 30, {"step": 3, "steps": 10, "loss": 1.5})
    assert beat is not None and beat.progress["step"] == 3
    assert storage.jobs.heartbeat(job.id, "someone-else", 30) is None
    assert storage.jobs.record(job.id, "w", metrics={"before": {}}, model_version="v2")
    assert not storage.jobs.record(job.id, "intruder", error="x")
    with pytest.raises(ValueError, match="cannot record"):
        storage.jobs.record(job.id, "w", status="succeeded")
    assert storage.jobs.finish(job.id, "w", "succeeded")
    done = storage.jobs.get(job.id)
    assert done is not None and done.finished and done.model_version == "v2"
    assert done.lease_owner is None and done.finished_at is not None
    assert not storage.jobs.finish(job.id, "w", "failed")  # finished jobs stay as they are


def test_a_dead_workers_job_is_queued_again_then_failed_with_the_reason(
    storage: Storage,
) -> None:
    job = storage.jobs.create({})
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = storage.jobs.claim(f"w{attempt}", lease_s=0.01)
        assert claimed is not None and claimed.attempts == attempt
        progress = {"step": 7, "stage": "training", "eta_s": 100.0, "history": [[7, 2.5]]}
        storage.jobs.heartbeat(job.id, f"w{attempt}", 0.01, progress)
        assert storage.jobs.expire_leases(now=10**12)[0].id == job.id
        after = storage.jobs.get(job.id)
        assert after is not None and "stopped responding at step 7" in (after.error or "")
        # Not running any more: no stage or time left shown, its curve kept.
        shown = job_view(after).progress
        assert shown.stage is None and shown.eta_s is None
        assert shown.step == 7 and shown.history == [[7, 2.5]]
        if attempt < MAX_ATTEMPTS:
            assert after.status == "queued" and "queued again" in (after.error or "")
        else:
            assert after.status == "failed" and after.finished_at is not None
    # A live worker's lease is left alone.
    live = storage.jobs.create({})
    storage.jobs.claim("alive", lease_s=3600)
    assert storage.jobs.expire_leases() == []
    assert storage.jobs.get(live.id).status == "running"  # type: ignore[union-attr]
    # The dead worker may not write to a job it lost.
    assert not storage.jobs.record(job.id, f"w{MAX_ATTEMPTS}", error="late")


def test_cancel_ends_a_queued_job_and_asks_a_running_one_to_stop(storage: Storage) -> None:
    queued = storage.jobs.create({})
    running = storage.jobs.create({})
    assert storage.jobs.claim("w", 30).id == queued.id  # type: ignore[union-attr]
    other = storage.jobs.create({})
    cancelled = storage.jobs.request_cancel(other.id)
    assert cancelled is not None and cancelled.status == "cancelled" and cancelled.finished
    asked = storage.jobs.request_cancel(queued.id)
    assert asked is not None and asked.status == "running" and asked.cancel_requested
    beat = storage.jobs.heartbeat(queued.id, "w", 30)
    assert beat is not None and beat.cancel_requested  # the worker learns it here
    assert storage.jobs.request_cancel("nope") is None
    assert [j.id for j in storage.jobs.unfinished()] == [queued.id, running.id]
    # Its worker stops before it saw the cancel: released, it ends cancelled rather than
    # wait in the queue to be claimed, prepared and cancelled then.
    assert storage.jobs.release(queued.id, "w", "the worker stopped")
    released = storage.jobs.get(queued.id)
    assert released is not None and released.status == "cancelled" and released.finished
    assert released.error == "cancelled while it ran"
    assert [j.id for j in storage.jobs.unfinished()] == [running.id]


def test_switching_versions_is_a_target_then_one_whole_swap(storage: Storage) -> None:
    storage.models.add(model_row("a", active=True))
    storage.models.add(model_row("b"))
    storage.models.add(model_row("c"))
    with pytest.raises(KeyError):
        storage.models.request_switch("nope")
    storage.models.request_switch("b")
    assert storage.models.target() == "b" and storage.models.active().version == "a"  # type: ignore[union-attr]
    storage.models.request_switch("c")  # asked again: the newest request wins
    assert not storage.models.complete_switch("b")  # b is no longer what was asked for
    assert storage.models.complete_switch("c")
    assert storage.models.active().version == "c" and storage.models.target() is None  # type: ignore[union-attr]
    storage.models.request_switch("a")
    storage.models.request_switch("c")  # the active one: calls the switch off
    assert storage.models.target() is None


def test_deleting_a_version_takes_its_embeddings_and_refuses_the_serving_ones(
    storage: Storage,
) -> None:
    storage.models.add(model_row("a", active=True))
    storage.models.add(model_row("b"))
    storage.models.add(model_row("c"))
    vector = np.ones(4, np.float32) / 2
    item = storage.items.create(
        NewItem(kind="text", modalities=["text"], status="ready", text="x"),
        "a", [Embedding("vat", "text", vector)],
    )  # fmt: skip
    for version in ("b", "c"):
        storage.items.mark_ready(item.seq, version, [Embedding("vat", "text", vector)],
                                 ["text"], None, None, None)  # fmt: skip
    storage.models.request_switch("c")
    with pytest.raises(ValueError):
        storage.models.delete("a")  # active
    with pytest.raises(ValueError):
        storage.models.delete("c")  # being switched to
    assert storage.models.delete("b") == 1
    assert storage.models.get("b") is None
    assert storage.embeddings.get(item.seq, "b", "vat", "text") is None
    assert storage.embeddings.get(item.seq, "a", "vat", "text") is not None
    with pytest.raises(KeyError):
        storage.models.delete("b")


def test_hosts_whose_clocks_differ_compare_leases_and_heartbeats_on_the_databases(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several hosts on one PostgreSQL: a worker and a replica on a host whose clock is
    an hour behind had their lease expire at once on every other host (the job handed on
    while it ran), and looked dead (their uploads taken over, their version deleted)."""
    if storage.db.engine == "sqlite":
        pytest.skip("a SQLite file has one host: its clock is the database's")
    job = storage.jobs.create({})
    real = time.time
    with monkeypatch.context() as behind:
        behind.setattr(time, "time", lambda: real() - 3600)
        assert storage.jobs.claim("slow-host-worker", lease_s=600) is not None
        storage.heartbeats.beat("slow-host-api", "api", serving="v1")
        assert storage.jobs.heartbeat(job.id, "slow-host-worker", 600) is not None
    # Read on a host whose clock is right:
    assert storage.jobs.expire_leases() == []
    assert storage.heartbeats.live("api", within_s=30) == ["slow-host-api"]
    storage.models.add(model_row("v1"))
    with pytest.raises(VersionServed):
        storage.models.delete("v1", replicas_within_s=30)


def test_jobs_are_listed_newest_first_by_status_and_limit_in_sql(storage: Storage) -> None:
    """The worker's idle round read every job (curves and all) to find the newest one."""
    first, second, third = (storage.jobs.create({"n": n}) for n in range(3))
    storage.jobs.request_cancel(second.id)
    assert [j.id for j in storage.jobs.all()] == [third.id, second.id, first.id]
    assert [j.id for j in storage.jobs.all(limit=2)] == [third.id, second.id]
    assert [j.id for j in storage.jobs.all("cancelled")] == [second.id]
    assert [j.id for j in storage.jobs.all("queued", 1)] == [third.id]
    assert storage.jobs.all("running") == []
    latest = storage.jobs.latest()
    assert latest is not None and latest.id == third.id
