"""The worker's own bookkeeping, without training: automatic retraining, tidying, and a
job's steps around the trainer (its training set file, its lease)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import service.worker.job as job_module
import service.worker.loop as loop_module
from model import load_config
from model.training.options import apply_overrides
from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, Storage
from service.worker.job import Heartbeat, JobRun, JobStopped
from service.worker.loop import Worker
from service.worker.recipe import FINETUNE_LR, choose_recipe
from service.worker.training_set import TrainingSet
from service.worker.versions import publish_version, remove_unlisted_versions


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
    # ".v.x.tmp": a publish a kill cut short (publish_dir's cleanup never ran).
    for name in ("listed", "orphan", "fresh-orphan", ".cut.x7.tmp", ".fresh.y8.tmp", ".other"):
        (settings.models_dir / name).mkdir(parents=True)
    old = time.time() - 7200
    for name in ("orphan", ".cut.x7.tmp", ".other"):
        os.utime(settings.models_dir / name, (old, old))
    Worker(settings, storage, "w").tidy()
    assert sorted(p.name for p in settings.runs_dir.iterdir()) == [live.id]
    # A version folder no row names yet may be one a worker is publishing right now.
    left = sorted(p.name for p in settings.models_dir.iterdir())
    assert left == [".fresh.y8.tmp", ".other", "fresh-orphan", "listed"]
    removed = remove_unlisted_versions(settings.models_dir, storage, older_than_s=0)
    assert sorted(removed) == [".fresh.y8.tmp", "fresh-orphan"]


def test_a_starting_model_being_registered_is_not_taken_for_an_old_orphan(
    storage: Storage, tmp_path: Path
) -> None:
    """copytree gave the copy the shipped model's own (old) time: until its row was
    written, a worker's tidy removed the folder as an old one no row names."""
    from service.model_versions import register_starting_model

    source = tmp_path / "shipped"
    source.mkdir()
    (source / "config.json").write_text(load_config("tiny").to_json())
    old = time.time() - 30 * 86400
    os.utime(source, (old, old))
    settings = Settings(data_dir=tmp_path / "data")
    row = register_starting_model(source, settings.models_dir, storage)
    with storage.db.transaction() as conn:  # as it was before its row was written
        conn.execute("DELETE FROM models WHERE version = ?", (row.version,))
    assert remove_unlisted_versions(settings.models_dir, storage) == []
    assert (settings.models_dir / row.version / "config.json").is_file()


def test_versions_past_the_kept_ones_are_deleted_with_their_files(
    storage: Storage, tmp_path: Path
) -> None:
    """Every automatic retraining left a whole version (weights, speech language model,
    every item's vectors) for good: the disk and the database only grew."""
    settings = Settings(data_dir=tmp_path, keep_versions=2)
    active_model(settings, storage)  # v1, registered from disk
    item = storage.items.create(NewItem(kind="audio", modalities=["audio"], content_hash="x"))
    for n in range(6):
        version = f"t{n}"
        (settings.models_dir / version).mkdir()
        storage.models.add(ModelRow(version, f"2026-12-07T00:0{n}:00Z", {}, {}, "v1", False,
                                    job_id=f"job-{n}"))  # fmt: skip
        vector = Embedding("va", "audio", np.ones(4, np.float32))
        assert storage.embeddings.add_for_stored(version, [(item.seq, vector)]) == 1
    storage.models.add(ModelRow("v0", "2026-12-05T00:00:00Z", {}, {}, None, False))  # from disk
    running = storage.jobs.create({"steps": 10})
    assert storage.jobs.claim("w", 60.0) is not None
    assert storage.jobs.record(running.id, "w", data={"parent": "t0"}, model_version="t1")
    assert storage.models.request_switch("t2")
    Worker(Settings(data_dir=tmp_path, keep_versions=0), storage, "w").tidy()
    assert len(storage.models.all()) == 8  # 0: every one kept

    Worker(settings, storage, "w").tidy()
    # Kept: the active and the registered ones, t0 (a running job trains from it), t1
    # (it made it), t2 (being switched to), and the 2 newest of the rest (t5, t4).
    left = {m.version for m in storage.models.all()}
    assert left == {"v1", "v0", "t0", "t1", "t2", "t4", "t5"}
    assert not (settings.models_dir / "t3").exists() and (settings.models_dir / "t4").is_dir()
    assert len(storage.embeddings.seqs("t3", "va", "audio")) == 0
    assert len(storage.embeddings.seqs("t4", "va", "audio")) == 1


def test_training_threads_follow_the_setting_or_share_the_cores() -> None:
    from service.worker.train_process import threads_per_rank

    assert threads_per_rank(0, 1, cores=16) == 16  # auto: one process takes every core
    assert threads_per_rank(0, 4, cores=16) == 4  # auto: each rank its share
    assert threads_per_rank(0, 4, cores=2) == 1  # never below one
    assert threads_per_rank(3, 4, cores=16) == 3  # MMV_TRAIN_THREADS wins
    assert Settings(train_threads=2).train_threads == 2
    assert Settings().train_threads == 0


# -- a job's steps around the trainer ---------------------------------------------------
# The trainer, the models and the version's files are stand-ins (FakeTraining): what is
# tested is the worker's own handling of the run folder, the database and the lease.
VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\na teal crescent whistles\n"
NO_SCORE = {"clips": 4, "directions": {}, "score": 0.0}  # the new model is "not worse"


def add_clips(storage: Storage, media: Path, n: int) -> None:
    media.mkdir(parents=True, exist_ok=True)
    for _ in range(n):
        digest = os.urandom(32).hex()
        (media / digest).write_bytes(b"clip")
        row = storage.items.create(NewItem(kind="video", modalities=["video", "audio"],
                                           content_hash=digest, transcript_vtt=VTT,
                                           duration_s=4.0))  # fmt: skip
        storage.items.mark_ready(row.seq, "v", [Embedding("va", "video", np.ones(2, np.float32))],
                                 ["video", "audio"], None, None, 4.0)  # fmt: skip


def active_model(settings: Settings, storage: Storage, version: str = "v1") -> None:
    folder = settings.models_dir / version
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(load_config("tiny").to_json())
    storage.models.add(ModelRow(version, "2026-12-06T00:00:00Z", {}, {}, None, False))
    storage.models.activate(version)


@dataclass
class FakeTraining:
    stop_worker: bool = False  # the worker is asked to stop while the job trains
    during_training: Callable[[], None] | None = None
    during_evaluation: Callable[[], None] | None = None
    during_publishing: Callable[[], None] | None = None
    progress: dict[str, Any] = field(default_factory=dict)  # as the trainer reports it
    trained_on: list[TrainingSet] = field(default_factory=list)
    saved_state_seen: list[bool] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    published_with: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTraining:
    fake = FakeTraining()

    def train(run: JobRun, beat: Heartbeat) -> None:
        # What the training process does first: read its clips (service/worker/train_run.py).
        fake.trained_on.append(TrainingSet.read(run.run_dir / "spec.json"))
        state = run.run_dir / "model" / "train_state.pt"
        fake.saved_state_seen.append(state.is_file())
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_bytes(b"state")
        beat.set(**fake.progress)
        if fake.during_training:
            fake.during_training()
        if fake.stop_worker:
            run.stopping.set()
            raise JobStopped()

    def evaluate(*_: Any) -> dict[str, Any]:
        if fake.during_evaluation:
            fake.during_evaluation()
        return NO_SCORE

    def publish(_run_model: Path, _models_dir: Path, storage: Storage, **kw: Any) -> ModelRow:
        row = ModelRow(f"trained-{len(fake.published)}", "2026-12-06T00:00:00Z", {}, {},
                       kw["parent"], False, kw["job_id"])  # fmt: skip
        storage.models.add(row)
        fake.published.append(row.version)
        fake.published_with.append(kw)
        if fake.during_publishing:
            fake.during_publishing()
        return row

    monkeypatch.setattr(JobRun, "_train", train)
    monkeypatch.setattr(job_module, "load_model", lambda _path: None)
    monkeypatch.setattr(job_module, "evaluate_on_slice", evaluate)
    monkeypatch.setattr(job_module, "publish_version", publish)
    return fake


TORN_SPEC = '{"train": [{"id": "3f2a", "path": "/data/runs/'  # a write cut short by a kill


def test_a_torn_training_set_file_is_chosen_again_instead_of_failing_the_job(
    storage: Storage, tmp_path: Path, fake: FakeTraining
) -> None:
    """A worker killed while it wrote spec.json at the first claim left half a file;
    the next claim chooses the clips again and the job goes on."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10})
    (settings.runs_dir / job.id).mkdir(parents=True)
    (settings.runs_dir / job.id / "spec.json").write_text(TORN_SPEC)
    assert Worker(settings, storage, "w").run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    (trained,) = fake.trained_on
    assert len(trained.train) + len(trained.val) == 24 and done.data["clips"] == 24
    assert not (settings.runs_dir / job.id).exists()  # an ended job's folder goes


@pytest.mark.parametrize("clip_deleted", [False, True])
def test_a_torn_training_set_file_after_training_began_keeps_the_first_claims_clips(
    storage: Storage, tmp_path: Path, fake: FakeTraining, clip_deleted: bool
) -> None:
    """spec.json torn after the run saved state (a power cut): the clips chosen again
    are those of the first claim, not the items uploaded since, so the saved state
    still fits the run and training continues from it; with one of them deleted since,
    the state is another set's and training starts over (the trainer would refuse it)."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10})
    fake.stop_worker = True
    assert Worker(settings, storage, "w1").run_once()  # trains a while, then stops
    queued = storage.jobs.get(job.id)
    assert queued is not None and queued.status == "queued" and queued.data["clips"] == 24
    first = fake.trained_on[0]
    add_clips(storage, settings.media_dir, 30)  # uploads meanwhile
    if clip_deleted:
        (settings.media_dir / first.train[0].content_hash).unlink()
    (settings.runs_dir / job.id / "spec.json").write_text(TORN_SPEC)
    fake.stop_worker = False
    assert Worker(settings, storage, "w2").run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done.error
    again = fake.trained_on[1]
    ids = {c.id for c in again.train + again.val}
    assert ids == {c.id for c in first.train[clip_deleted:] + first.val}
    assert again.last_seq == first.last_seq
    assert fake.saved_state_seen == [False, not clip_deleted]
    if not clip_deleted:  # the very same set: the split too
        assert again == first and done.data["val_ids"] == queued.data["val_ids"]


@pytest.mark.parametrize("lost_while", ["evaluating", "publishing", "publishing, then failing"])
def test_a_worker_that_lost_its_job_neither_activates_nor_removes_the_new_owners_folder(
    storage: Storage,
    tmp_path: Path,
    fake: FakeTraining,
    monkeypatch: pytest.MonkeyPatch,
    lost_while: str,
) -> None:
    """The worker's lease runs out (a stalled process, a database outage) and another
    worker takes the job up, in the same shared run folder, before this one notices."""
    # No background heartbeat in this test: the worker's own checks must see the loss.
    monkeypatch.setattr(job_module, "PROGRESS_EVERY_S", 3600.0)
    settings = Settings(data_dir=tmp_path, job_lease_s=3600)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "auto"})

    def lose_lease() -> None:
        if storage.jobs.get(job.id).lease_owner == "w2":  # type: ignore[union-attr]
            return  # evaluation runs twice (the active model, the new one)
        storage.jobs.expire_leases(now=time.time() + 7200)
        taken = storage.jobs.claim("w2", settings.job_lease_s)
        assert taken is not None and taken.id == job.id

    def lose_lease_then_fail() -> None:  # e.g. the disk filled up while it was saved
        lose_lease()
        raise OSError(28, "No space left on device")

    if lost_while == "evaluating":
        fake.during_evaluation = lose_lease
    elif lost_while == "publishing":
        fake.during_publishing = lose_lease
    else:  # a failure, not a stop: the folder is still the new owner's
        fake.during_publishing = lose_lease_then_fail
    assert Worker(settings, storage, "w1").run_once()
    row = storage.jobs.get(job.id)
    assert row is not None and row.status == "running" and row.lease_owner == "w2"
    # Published before the loss could be seen at most; never asked to serve.
    assert fake.published == ([] if lost_while == "evaluating" else ["trained-0"])
    assert [m.version for m in storage.models.all() if m.job_id] == fake.published
    assert storage.models.target() is None
    assert (settings.runs_dir / job.id / "spec.json").is_file()  # w2's, left alone
    assert row.model_version is None and not row.activated


class EndlessTraining:
    """A training process that runs until it is stopped (the STOP file) or killed."""

    def __init__(self, run_dir: Path, *_: Any) -> None:
        self.run_dir, self.killed, self.stopped_early = run_dir, False, False

    def wait(self, timeout: float | None = None) -> int | None:
        if self.killed:
            return -9
        if (self.run_dir / "STOP").exists():
            self.stopped_early = True
            return 3
        time.sleep(timeout or 0)
        return None

    def stop(self) -> None:
        (self.run_dir / "STOP").touch()

    def kill(self) -> None:
        self.killed = True


def test_a_run_whose_lease_was_lost_is_killed_without_a_stop_file_in_the_shared_folder(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder may already be the new owner's: a STOP file there would stop its run,
    and a state saved on the way out would be written over its own."""
    monkeypatch.setattr(job_module, "TrainProcess", EndlessTraining)
    settings = Settings(data_dir=tmp_path)
    job = storage.jobs.create({"steps": 10})
    run = JobRun(settings, storage, job, "w1", threading.Event())
    run.run_dir.mkdir(parents=True)
    beat = Heartbeat(storage, job, "w1", 30.0)
    beat.lost = True
    with pytest.raises(JobStopped):
        run._train(beat)
    assert not (run.run_dir / "STOP").exists()


@pytest.mark.parametrize("first_deleted", [False, True])
def test_a_job_taken_up_after_a_switch_continues_from_the_version_it_started_from(
    storage: Storage, tmp_path: Path, fake: FakeTraining, first_deleted: bool
) -> None:
    """Released mid-training (its worker stopped), then the service rolled back or
    switched: its saved state descends from the version active at its first claim, so
    it goes on from that one (the trainer refused the state as another run's, and the
    job failed for good); compared with the version that serves now. Only if the first
    one was deleted meanwhile does it start over from the active one."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage, "v1")
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "manual"})
    fake.stop_worker = True
    assert Worker(settings, storage, "w1").run_once()
    active_model(settings, storage, "v2")  # a roll-back, or another job's version
    if first_deleted:
        storage.models.delete("v1")
        shutil.rmtree(settings.models_dir / "v1")
    fake.stop_worker = False
    assert Worker(settings, storage, "w2").run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    start = "v2" if first_deleted else "v1"
    assert done.data["parent"] == start
    (published,) = fake.published_with
    assert published["parent"] == start and published["compared_with"] == "v2"
    assert fake.saved_state_seen == [False, not first_deleted]


def test_a_job_cancelled_while_its_version_is_saved_does_not_switch_to_it(
    storage: Storage, tmp_path: Path, fake: FakeTraining
) -> None:
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "auto"})
    fake.during_publishing = lambda: storage.jobs.request_cancel(job.id) and None
    assert Worker(settings, storage, "w").run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "cancelled", done and done.status
    assert storage.models.target() is None and not done.activated
    # The version made stays, inactive, named by the job.
    assert done.model_version == fake.published[0]
    assert storage.models.active().version == "v1"  # type: ignore[union-attr]


def test_a_job_taken_up_again_after_its_switch_never_undoes_a_roll_back(
    storage: Storage, tmp_path: Path, fake: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failed right after the switch was asked for, before `activated` was
    recorded; the switch completed and the user rolled back. Taken up again, the job
    switched forward to its version once more."""
    from service.storage import StorageError

    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage, "v1")
    add_clips(storage, settings.media_dir, 24)
    real_request = storage.models.request_switch

    def asked_then_database_failed(version: str, **kw: Any) -> bool:
        assert real_request(version, **kw)
        monkeypatch.setattr(storage.models, "request_switch", real_request)
        raise StorageError("cannot write to the database: database is locked")

    monkeypatch.setattr(storage.models, "request_switch", asked_then_database_failed)
    monkeypatch.setattr(loop_module, "DATABASE_RETRY_S", 0.0)
    job = storage.jobs.create({"steps": 10, "activate": "auto"})
    worker = Worker(settings, storage, "w")
    assert worker.run_once()
    assert storage.jobs.get(job.id).status == "queued"  # type: ignore[union-attr]
    made = fake.published[0]
    assert storage.models.complete_switch(made)  # the API switched to it
    storage.models.activate("v1")  # and the user rolled back
    assert worker.run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert "not activated again" in str(done.error)
    assert storage.models.target() is None
    assert storage.models.active().version == "v1"  # type: ignore[union-attr]


def test_a_job_is_compared_with_what_serves_after_training_and_never_undoes_a_switch(
    storage: Storage, tmp_path: Path, fake: FakeTraining
) -> None:
    """The serving version was read once, at the claim: a job that trained for hours
    across a user's roll-back was judged against the version rolled back from, and then
    switched the service to its own version, undoing the roll-back."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage, "v0")
    active_model(settings, storage, "v1")
    add_clips(storage, settings.media_dir, 24)
    # Rolled back while it trained: compared with v0, and switched to (not worse).
    fake.during_training = lambda: storage.models.activate("v0")
    first = storage.jobs.create({"steps": 10, "activate": "auto"})
    assert Worker(settings, storage, "w").run_once()
    done = storage.jobs.get(first.id)
    assert done is not None and done.status == "succeeded" and done.activated
    assert done.metrics["compared_with"] == fake.published_with[0]["compared_with"] == "v0"
    assert storage.models.target() == "trained-0"
    storage.models.request_switch("v0")  # called off
    # Switched away while it was saved: made, and left inactive, saying why.
    fake.during_training = None
    fake.during_publishing = lambda: storage.models.request_switch("v1") and None
    second = storage.jobs.create({"steps": 10, "activate": "auto"})
    assert Worker(settings, storage, "w").run_once()
    done = storage.jobs.get(second.id)
    assert done is not None and done.status == "succeeded" and not done.activated
    assert "another version was switched to meanwhile" in str(done.error)
    assert storage.models.target() == "v1"  # what the user asked for
    # Its own version deleted before the switch: said so (it failed on a KeyError).
    storage.models.request_switch("v0")
    fake.during_publishing = lambda: storage.models.delete("trained-2") and None
    third = storage.jobs.create({"steps": 10, "activate": "auto"})
    assert Worker(settings, storage, "w").run_once()
    done = storage.jobs.get(third.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert done.error == "version trained-2 was deleted: not activated"
    assert storage.models.target() is None


def test_a_database_failure_in_a_job_queues_it_again_with_its_training_kept(
    storage: Storage, tmp_path: Path, fake: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database busy past its timeout as the new version was recorded ended the job
    failed, as a bug, and removed its run folder: hours of training thrown away."""
    from service.storage import StorageError

    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "manual"})

    def busy() -> None:
        raise StorageError("cannot write to the database: database is locked")

    fake.during_evaluation = busy
    monkeypatch.setattr(loop_module, "DATABASE_RETRY_S", 0.0)
    worker = Worker(settings, storage, "w")
    assert worker.run_once()
    again = storage.jobs.get(job.id)
    assert again is not None and again.status == "queued" and "database failed" in str(again.error)
    assert (settings.runs_dir / job.id / "model" / "train_state.pt").is_file()
    fake.during_evaluation = None
    assert worker.run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert fake.saved_state_seen == [False, True]  # went on from its saved state
    # A failure that comes back every time fails the job after a few tries.
    fake.during_evaluation = busy
    stuck = storage.jobs.create({"steps": 10, "activate": "manual"})
    for _ in range(loop_module.DATABASE_TRIES):
        assert worker.run_once()
    ended = storage.jobs.get(stuck.id)
    assert ended is not None and ended.status == "failed"
    assert f"{loop_module.DATABASE_TRIES} times in a row" in str(ended.error)


def test_a_worker_that_cannot_renew_its_lease_for_a_whole_lease_lets_the_job_go(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease was lost only when a renewal reached the database and was refused: a
    worker cut off from the database trained on, in the run folder that the worker it
    was handed on to trains in too."""
    job = storage.jobs.create({"steps": 10})
    claimed = storage.jobs.claim("w", 1.0)
    assert claimed is not None and claimed.id == job.id
    beat = Heartbeat(storage, claimed, "w", 1.0)
    beat.beat()
    assert not beat.lost

    def unreachable(*_: Any) -> None:
        raise OSError("could not connect to the database")

    monkeypatch.setattr(storage.jobs, "heartbeat", unreachable)
    beat.beat()
    assert not beat.lost  # a hiccup: well within the lease
    time.sleep(1.1)
    beat.beat()
    assert beat.lost


def test_a_job_let_go_after_a_database_outage_is_queued_again_at_once_uncounted(
    storage: Storage, tmp_path: Path, fake: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat went on renewing the lease once the database was back, so the job
    sat `running` under no one until it expired, and the outage cost it an attempt."""
    settings = Settings(data_dir=tmp_path, job_lease_s=1.0)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10})
    renew = storage.jobs.heartbeat

    def unreachable(*_: Any) -> None:
        raise OSError("could not connect to the database")

    def outage() -> None:  # longer than the lease, then the database is back
        monkeypatch.setattr(storage.jobs, "heartbeat", unreachable)
        time.sleep(1.5)
        monkeypatch.setattr(storage.jobs, "heartbeat", renew)
        time.sleep(0.5)  # beats that would renew it again
        raise JobStopped()  # as the training killed for the lost lease

    fake.during_training = outage
    monkeypatch.setattr(loop_module, "DATABASE_RETRY_S", 0.0)
    assert Worker(settings, storage, "w").run_once()
    again = storage.jobs.get(job.id)
    assert again is not None and again.status == "queued", again
    assert again.attempts == 0 and again.lease_owner is None
    assert "could not reach the database" in str(again.error)


def test_the_folders_of_jobs_ended_away_from_a_run_are_tidied_while_the_worker_runs(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A released job cancelled in the queue ends without a run: its folder (a
    checkpoint, links to media) went only at the worker's next start."""
    settings = Settings(data_dir=tmp_path)
    worker = Worker(settings, storage, "w")
    assert not worker.run_once()
    job = storage.jobs.create({})
    (settings.runs_dir / job.id / "model").mkdir(parents=True)
    storage.jobs.request_cancel(job.id)
    assert not worker.run_once()  # within the minute: left for now
    assert (settings.runs_dir / job.id).is_dir()
    monkeypatch.setattr(loop_module, "TIDY_EVERY_S", 0.0)
    assert not worker.run_once()
    assert not (settings.runs_dir / job.id).exists()


def test_a_new_version_keeps_its_lineages_recipe_so_the_next_job_can_grow_its_batch(
    storage: Storage, tmp_path: Path
) -> None:
    """The trainer saves its run's settings as the checkpoint's train section; a job on
    20 clips trains at batch 8 and the fine-tuning rate. Published so, the next job's
    recipe scaled from batch 8 for good (1,800 clips: batch 8 again, 22,500 steps
    capped to 3,000) and a model trained from scratch took the fine-tuning rate."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    lineage = load_config(settings.models_dir / "v1" / "config.json")
    first = choose_recipe(lineage, 20, "active", None)
    assert first.batch_size == 8 and first.lr == FINETUNE_LR
    run_model = tmp_path / "run" / "model"
    run_model.mkdir(parents=True)
    trained = apply_overrides(lineage, first.overrides())
    (run_model / "config.json").write_text(trained.to_json())
    (run_model / "metrics.json").write_text(json.dumps({"train": {"batch_size": 8}}))
    row = publish_version(
        run_model, settings.models_dir, storage, parent="v1", job_id="job-1",
        texts=["a teal crescent whistles"], evaluation={}, compared_with="v1",
        lineage_config=lineage,
    )  # fmt: skip
    published = load_config(settings.models_dir / row.version / "config.json")
    assert published.train == lineage.train and row.config["train"] == lineage.to_dict()["train"]
    assert published.video == trained.video and published.heads == trained.heads
    assert row.metrics["train"]["batch_size"] == 8  # what the job trained at, kept
    grown = choose_recipe(published, 1800, "active", None)
    assert grown.batch_size == min(lineage.train.batch_size, 512) and grown.batch_size > 8
    assert choose_recipe(published, 1800, "scratch", None).lr == lineage.train.lr


@pytest.mark.parametrize("activate", ["manual", "auto"])
def test_a_job_stopped_after_its_version_was_made_goes_on_from_that_version(
    storage: Storage, tmp_path: Path, fake: FakeTraining, monkeypatch: pytest.MonkeyPatch,
    activate: str,
) -> None:  # fmt: skip
    """The database refused the job's end (busy, gone a moment): its lease runs out and
    it is queued again. Its folder was removed before that record, so the next claim
    trained from nothing and published a second version of the same work; now it goes
    on from the version the first claim made."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": activate})
    if activate == "auto":  # killed before it asked for the switch
        fake.during_publishing = lambda: (_ for _ in ()).throw(SystemExit(1))
    finish = storage.jobs.finish

    def refused(*_: Any) -> None:
        raise OSError("the database is busy")

    monkeypatch.setattr(storage.jobs, "finish", refused)
    with pytest.raises(OSError if activate == "manual" else SystemExit):
        Worker(settings, storage, "w1").run_once()
    assert (settings.runs_dir / job.id / "model" / "train_state.pt").is_file()
    assert fake.published == ["trained-0"] and storage.models.target() is None
    monkeypatch.setattr(storage.jobs, "finish", finish)
    fake.during_publishing = None
    storage.jobs.expire_leases(now=time.time() + 7200)
    assert Worker(settings, storage, "w2").run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert fake.published == ["trained-0"] and len(fake.trained_on) == 1  # not again
    assert done.model_version == "trained-0"
    assert storage.models.target() == ("trained-0" if activate == "auto" else None)
    assert not (settings.runs_dir / job.id).exists()


def test_a_version_deleted_between_two_claims_is_not_made_again(
    storage: Storage, tmp_path: Path, fake: FakeTraining
) -> None:
    """A worker stopped (a deploy) after its job's version was made; the user deleted
    that version before the job was taken up again. The next claim published the same
    finished run under a new name, and switched to it."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "auto"})
    worker = Worker(settings, storage, "w1")
    fake.during_publishing = worker.stopping.set
    worker.run_once()
    queued = storage.jobs.get(job.id)
    assert queued is not None and queued.status == "queued"
    assert queued.model_version == "trained-0"
    storage.models.delete("trained-0")
    worker.stopping.clear()
    fake.during_publishing = None
    assert worker.run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded"
    assert "trained-0, was deleted since" in str(done.error)
    assert fake.published == ["trained-0"] and storage.models.target() is None


def test_a_job_taken_up_again_keeps_its_step_and_loss_curve(
    storage: Storage, tmp_path: Path, fake: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken up again after its run had finished, a job went back to step 0 and ended
    `succeeded` at step 0 with no loss curve; one resumed mid-run lost its earlier
    points."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "manual"})
    curve = [[5, 0.9], [10, 0.5]]
    fake.progress = {"step": 10, "steps": 10, "history": curve}
    fake.during_publishing = lambda: (_ for _ in ()).throw(SystemExit(1))  # killed
    with pytest.raises(SystemExit):
        Worker(settings, storage, "w1").run_once()
    fake.during_publishing, fake.progress = None, {}
    storage.jobs.expire_leases(now=time.time() + 7200)
    assert Worker(settings, storage, "w2").run_once()
    done = storage.jobs.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert done.progress["step"] == 10 and done.progress["history"] == curve


def test_a_resumed_runs_curve_follows_the_earlier_claims() -> None:
    from service.worker.train_process import CURVE_POINTS, resumed_curve

    earlier = [[100, 2.0], [200, 1.5], [300, 1.2], [350, 1.1]]
    # Saved at step 300: the run goes on from 301 and reports from there.
    assert resumed_curve(earlier, [[301, 1.19], [400, 1.0]]) == [
        [100, 2.0], [200, 1.5], [300, 1.2], [301, 1.19], [400, 1.0],
    ]  # fmt: skip
    assert resumed_curve(earlier, []) == earlier  # nothing new yet
    assert resumed_curve(earlier, [[1, 3.0]]) == [[1, 3.0]]  # started over
    long = [[float(s), 1.0] for s in range(1, 400)]
    assert len(resumed_curve(long, [[400.0, 0.9]])) <= CURVE_POINTS


def test_a_job_handed_on_before_its_end_was_recorded_keeps_the_new_owners_folder(
    storage: Storage, tmp_path: Path, fake: FakeTraining, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease ran out unseen (the last beat failed) and another worker took the job
    up in the shared folder: this worker's end record is refused, and the folder is
    not its to remove."""
    settings = Settings(data_dir=tmp_path)
    active_model(settings, storage)
    add_clips(storage, settings.media_dir, 24)
    job = storage.jobs.create({"steps": 10, "activate": "manual"})
    finish = storage.jobs.finish

    def handed_on(*args: Any) -> bool:
        storage.jobs.expire_leases(now=time.time() + 7200)
        assert storage.jobs.claim("w2", settings.job_lease_s) is not None
        return finish(*args)

    monkeypatch.setattr(storage.jobs, "finish", handed_on)
    assert Worker(settings, storage, "w1").run_once()
    row = storage.jobs.get(job.id)
    assert row is not None and row.status == "running" and row.lease_owner == "w2"
    assert (settings.runs_dir / job.id / "spec.json").is_file()
