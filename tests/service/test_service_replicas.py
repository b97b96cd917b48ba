"""What lets several API replicas and workers share one database, on both engines: the
change log a replica follows into its own FAISS indexes, the takeover of uploads a dead
replica was processing, one automatic retraining job however many workers, and media
files removed only when no item names them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from indexer import IndexPolicy, IndexRegistry
from service.active_model import ActiveModel
from service.change_follower import GAP_WAIT_S, ChangeFollower
from service.indexes import SEGMENT_ID_BASE, StorageSource
from service.settings import Settings
from service.storage import Embedding, ModelRow, NewItem, NewSegment, Storage, now_rfc3339

DIM = 8
LAYOUT = {"va": ["audio", "audio_segments"]}


@dataclass
class StubEmbedder:
    """ActiveModel needs only the version of what embeds (the follower embeds nothing)."""

    version: str


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def sound(content_hash: str) -> NewItem:
    return NewItem(kind="audio", modalities=["audio"], content_hash=content_hash)


def replica(storage: Storage, root: Path) -> tuple[ChangeFollower, IndexRegistry]:
    """One replica's indexes, opened from the database, and its follower."""
    follower = ChangeFollower(Settings(data_dir=root), storage, ActiveModel(), threading.Lock())
    follower.start_at_now()
    registry = IndexRegistry(root, IndexPolicy())
    registry.open("v1", LAYOUT, {"va": DIM}, StorageSource(storage, "v1"))
    follower.model.use(StubEmbedder("v1"), registry)  # type: ignore[arg-type]
    return follower, registry


def live(registry: IndexRegistry, modality: str = "audio") -> list[int]:
    return sorted(registry.active._get("va", modality).live_ids().tolist())


def make_ready(storage: Storage, content_hash: str, seed: int, segments: int = 0) -> int:
    row = storage.items.create(sound(content_hash))
    cut = [
        NewSegment(10.0 * n, 10.0 * n + 10, [Embedding("va", "audio", unit(seed * 100 + n))])
        for n in range(segments)
    ]
    storage.items.mark_ready(
        row.seq, "v1", [Embedding("va", "audio", unit(seed))], ["audio"], None, None, 30.0,
        segments=cut,
    )  # fmt: skip
    return row.seq


def test_a_replica_follows_uploads_and_deletes_made_by_another(
    storage: Storage, tmp_path: Path
) -> None:
    before = make_ready(storage, "before", 1)
    follower, registry = replica(storage, tmp_path / "b")
    assert live(registry) == [before]  # opened from the database

    # Replica A (here: storage calls, as its ingestion makes them) stores and deletes.
    uploaded = make_ready(storage, "up", 2, segments=2)
    text = storage.items.create(
        NewItem(kind="text", modalities=["text"], text="hi", status="ready"),
        "v1", [Embedding("va", "audio", unit(3))],
    )  # fmt: skip
    assert follower.poll() == 2
    assert live(registry) == [before, uploaded, text.seq]
    segments = [s.seq + SEGMENT_ID_BASE for s in storage.segments.of_item(uploaded)]
    assert len(segments) == 2 and live(registry, "audio_segments") == sorted(segments)
    # The same vectors were found at the same place: search agrees with the database.
    hit = registry.search("va", "audio", unit(2)[None, :], 1)
    assert int(hit.ids[0][0]) == uploaded

    storage.items.delete(uploaded)
    assert follower.poll() == 1
    assert live(registry) == [before, text.seq]
    assert live(registry, "audio_segments") == []
    assert follower.poll() == 0  # nothing new: nothing done


def test_an_item_deleted_through_another_replica_leaves_this_ones_cache(
    database: str | Path, storage: Storage, tmp_path: Path
) -> None:
    """Each replica caches ready rows for search's join; a delete made elsewhere was
    forgotten only where it was made, so here a hit on it still came back as ready."""
    here = Storage(database)  # this replica's own connection and cache
    try:
        follower, _ = replica(here, tmp_path / "b")
        seq = make_ready(storage, "gone-soon", 1)
        assert follower.poll() == 1
        assert seq in here.items.by_seqs([seq])  # cached as ready
        storage.items.delete(seq)  # through the other replica
        assert follower.poll() == 1
        assert seq not in here.items.by_seqs([seq])
    finally:
        here.close()


def test_changes_applied_twice_or_late_do_no_harm(storage: Storage, tmp_path: Path) -> None:
    follower, registry = replica(storage, tmp_path / "b")
    seq = make_ready(storage, "x", 1)
    storage.items.delete(seq)  # deleted before this replica heard of the upload
    follower.poll()
    assert live(registry) == []  # the upload's change finds no vectors: nothing comes back
    follower.applied_upto = 0  # read the whole log again
    follower.poll()
    assert live(registry) == []


def test_vectors_of_another_version_change_nothing_here(storage: Storage, tmp_path: Path) -> None:
    seq = make_ready(storage, "x", 1)
    follower, registry = replica(storage, tmp_path / "b")
    storage.models.add(ModelRow("v2", now_rfc3339(), {}, {}, None, False))
    storage.embeddings.add_for_stored("v2", [(seq, Embedding("va", "audio", unit(9)))])
    assert follower.poll() == 1
    assert live(registry) == [seq]
    hit = registry.search("va", "audio", unit(1)[None, :], 1)  # still v1's vector
    assert hit.scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_a_gap_in_the_log_is_waited_for_then_passed_over(storage: Storage, tmp_path: Path) -> None:
    follower, _ = replica(storage, tmp_path / "b")
    make_ready(storage, "a", 1)
    make_ready(storage, "b", 2)
    last = storage.changes.last_seq()
    # As if the first change's transaction had not committed yet when the log was read.
    follower._applied_above.add(last)
    follower.applied_upto = last - 2
    follower._advance()
    assert follower.applied_upto == last - 2  # waiting: the missing one may still commit
    follower._gap_seen_at[last - 1] -= GAP_WAIT_S + 1
    follower._advance()
    assert follower.applied_upto == last


def test_a_run_of_missing_numbers_is_waited_for_once_not_once_each(
    storage: Storage, tmp_path: Path
) -> None:
    """Each missing number's wait began only when it was the next one: a run of 32 (a
    PostgreSQL sequence after a crash) held the follower 32 × 5 s."""
    follower, _ = replica(storage, tmp_path / "b")
    for n in range(5):
        make_ready(storage, f"r{n}", n + 1)
    last = storage.changes.last_seq()
    follower._applied_above.add(last)  # the 4 before it: missing
    follower.applied_upto = last - 5
    follower._advance()
    assert follower.applied_upto == last - 5
    for missing in follower._gap_seen_at:
        follower._gap_seen_at[missing] -= GAP_WAIT_S + 1  # one wait's time passes
    follower._advance()
    assert follower.applied_upto == last


def test_a_live_replica_takes_over_the_uploads_of_a_dead_one(storage: Storage) -> None:
    storage.heartbeats.beat("host-a", "api")
    storage.heartbeats.beat("host-b", "api")
    mine = storage.items.create(sound("a1"), processing_by="host-a")
    theirs = storage.items.create(sound("b1"), processing_by="host-b")
    ready = storage.items.create(sound("b2"), processing_by="host-b")
    storage.items.mark_ready(ready.seq, "v1", [], ["audio"], None, None, 1.0)
    live = storage.heartbeats.live("api", 30)
    assert storage.items.adopt_processing("host-a", live) == []  # both alive
    # host-b stops beating (killed): host-a takes its unfinished upload, and only that.
    taken = storage.items.adopt_processing("host-a", ["host-a"])
    assert [r.seq for r in taken] == [theirs.seq]
    assert storage.items.adopt_processing("host-c", ["host-a", "host-c"]) == []  # taken once
    assert mine.seq not in [r.seq for r in taken]
    # No replica alive (SQLite's one API process at its start): every one is taken.
    assert [r.seq for r in storage.items.adopt_processing("host-d", [])] == [mine.seq, theirs.seq]


def test_an_upload_taken_over_is_processed_as_it_was_asked_without_speech_recognition(
    storage: Storage, tmp_path: Path
) -> None:
    """`asr=false` lived only in the request: a replica taking over the upload (after a
    crash, a stop, a dead replica) ran speech recognition on it all the same."""
    import asyncio

    from service.prometheus import Metrics
    from service.runtime import Runtime

    quiet = storage.items.create(replace(sound("q1"), asr=False), processing_by="gone")
    heard = storage.items.create(sound("h1"), processing_by="gone")
    assert storage.items.without_asr([quiet.seq, heard.seq]) == {quiet.seq}
    if storage.db.engine != "sqlite":
        return  # the takeover below runs on the runtime's own SQLite database
    runtime = Runtime(Settings(data_dir=tmp_path / "data", asr=True), Metrics())
    try:
        quiet = runtime.storage.items.create(replace(sound("q2"), asr=False), processing_by="x")
        heard = runtime.storage.items.create(sound("h2"), processing_by="x")
        spawned: dict[int, bool] = {}
        runtime.ingestor.spawn = lambda row, info=None, asr=True: spawned.update({row.seq: asr})  # type: ignore[method-assign]
        assert asyncio.run(runtime.take_over_uploads(at_start=True)) == 2
        assert spawned == {quiet.seq: False, heard.seq: True}
    finally:
        runtime.media_pool.shutdown()


def test_an_upload_whose_processing_stopped_unfinished_is_processed_again(
    tmp_path: Path,
) -> None:
    """Processing that ended with no outcome stored (the database failed as the item's
    failure was recorded) left the item `processing` until the next restart."""
    import asyncio

    from service.prometheus import Metrics
    from service.runtime import Runtime

    runtime = Runtime(Settings(data_dir=tmp_path / "data"), Metrics())
    try:
        me = runtime.settings.replica_name
        items = runtime.storage.items
        stalled, running, young, other, retried = (
            items.create(sound(h), processing_by=owner)
            for h, owner in (("s", me), ("r", me), ("y", me), ("o", "host-b"), ("f", me))
        )
        assert items.mark_failed(retried.seq, "a decoder crashed on it")
        with runtime.storage.db.transaction() as conn:  # all but `young`: long ago
            conn.execute("UPDATE items SET created_at = '2026-01-01T00:00:00Z' WHERE seq <> ?",
                         (young.seq,))  # fmt: skip
        runtime.beat()
        runtime.storage.heartbeats.beat("host-b", "api")  # alive: its upload is its own
        runtime.ingestor.in_flight.add(running.seq)
        spawned: list[int] = []
        runtime.ingestor.spawn = lambda row, info=None, asr=True: spawned.append(row.seq)  # type: ignore[method-assign]
        read = items.processing_of

        def upload_meanwhile(owner: str, created_before: str) -> list:  # type: ignore[type-arg]
            """The failed item's bytes uploaded again (asr=false) after the sweep looked at
            what is in flight: `processing` again with its old creation time, so no
            grace; it was processed a second time beside its upload."""
            runtime.ingestor.in_flight.add(retried.seq)  # as Ingestor._retry_failed does
            again = items.retry_failed(retried.seq, "f", me, lambda: None, asr=False)
            assert again is not None and again.status == "processing"
            return read(owner, created_before)

        items.processing_of = upload_meanwhile  # type: ignore[method-assign]
        assert asyncio.run(runtime.take_over_uploads()) == 1
        assert spawned == [stalled.seq]
        assert {other.seq, young.seq}.isdisjoint(spawned)
        # Its asr=false is kept for a replica that takes it over (it had the first's).
        assert items.without_asr([retried.seq]) == {retried.seq}
    finally:
        runtime.media_pool.shutdown()


def test_a_second_upload_of_a_failed_items_bytes_leaves_the_first_in_flight(
    tmp_path: Path,
) -> None:
    """Two uploads of a failed item's bytes at once: the first retries it, the second
    finds it no longer failed and looks again. The second took the item out of the
    uploads in flight while the first processed it, and the stalled-upload sweep then
    processed it a second time."""
    import asyncio

    from service.prometheus import Metrics
    from service.runtime import Runtime
    from service.uploads import ReceivedUpload

    runtime = Runtime(Settings(data_dir=tmp_path / "data"), Metrics())
    try:
        items = runtime.storage.items
        row = items.create(sound("g"), processing_by=runtime.settings.replica_name)
        assert items.mark_failed(row.seq, "a decoder crashed on it")
        failed = items.get_by_seq(row.seq)
        assert failed is not None
        first = items.retry_failed(row.seq, "g", runtime.settings.replica_name, lambda: None)
        assert first is not None  # the first upload's, now processing it
        runtime.ingestor.in_flight.add(row.seq)
        upload = ReceivedUpload(tmp_path / "second.wav", 4, "g", "second.wav")
        again = asyncio.run(runtime.ingestor._retry_failed(upload, failed, False, True))
        assert again is None  # no longer failed: the second upload looks again
        assert row.seq in runtime.ingestor.in_flight
    finally:
        runtime.media_pool.shutdown()


def test_workers_queue_one_automatic_job_between_them(storage: Storage) -> None:
    made = []

    def worker() -> None:
        made.append(storage.jobs.create_when_idle({"trigger": "test"}))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([j for j in made if j is not None]) == 1
    assert len(storage.jobs.all()) == 1


def test_a_media_file_goes_only_when_no_item_names_it(storage: Storage, tmp_path: Path) -> None:
    removed: list[str] = []
    row = storage.items.create(sound("h"), before_insert=lambda: None)
    assert not storage.items.remove_media_if_unused("h", removed.append)
    storage.items.delete(row.seq)
    assert storage.items.remove_media_if_unused("h", removed.append)
    assert removed == ["h"]


def test_a_failed_item_keeps_no_vectors_and_leaves_every_index(
    storage: Storage, tmp_path: Path
) -> None:
    follower, registry = replica(storage, tmp_path / "b")
    seq = make_ready(storage, "x", 1, segments=2)
    follower.poll()
    assert live(registry) == [seq] and len(live(registry, "audio_segments")) == 2
    # E.g. a switch of versions that could not embed it: failed, with the reason.
    assert storage.items.mark_failed(seq, "could not be embedded with model version v2")
    row = storage.items.get_by_seq(seq)
    assert row is not None and row.status == "failed"
    assert storage.embeddings.seqs("v1", "va", "audio").tolist() == []
    assert storage.segments.of_item(seq) == []
    follower.poll()
    assert live(registry) == [] and live(registry, "audio_segments") == []


def test_a_replica_that_cannot_see_the_active_versions_folder_refuses_to_start(
    storage: Storage, tmp_path: Path
) -> None:
    """It registered MMV_MODEL and made it the active version in the shared database:
    a replica started before the data volume was mounted switched every replica back
    to the starting model (and each re-embedded the collection)."""
    from model import load_config
    from service.model_versions import ModelVersionError, active_model_version

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text(load_config("tiny").to_json())
    storage.models.add(ModelRow("trained-1", "2026-12-07T00:00:00Z", {}, {}, None, False))
    storage.models.activate("trained-1")
    unmounted = tmp_path / "empty" / "models"
    with pytest.raises(ModelVersionError, match="is the shared data directory mounted"):
        active_model_version(str(shipped), unmounted, storage, shared=True)
    assert storage.models.active().version == "trained-1"  # type: ignore[union-attr]
    # One host on SQLite: the folder is gone for good, and the starting model serves.
    handle = active_model_version(str(shipped), unmounted, storage, shared=False)
    assert handle is not None and handle.version.startswith("shipped-")
