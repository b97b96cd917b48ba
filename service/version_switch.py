"""Switching the service to another model version while it keeps answering.

The database says which version should serve (`storage.models.target()`: set by
`POST /v1/models/{v}/activate` or by a training job's auto-activation, from any
process); this process notices within MMV_SWITCH_POLL_S and, in a background thread:

1. loads the new model;
2. embeds every ready item that has no vector of the new version yet, with the media
   worker processes, its windows read from the decode cache (DATA_DIR/cache; decoded
   from the media file where missing), texts with the new text tower here; the vectors
   go to the database (the truth) as they come;
3. builds the new version's indexes from the database beside the serving ones;
4. catches up: items uploaded meanwhile were embedded by the serving version, so they
   are embedded again, until few are left;
5. swaps, holding the ingestion index lock (uploads wait a moment; searches never do):
   the last few items are embedded, the database makes the new version active in one
   transaction, the indexes catch up with the database one last time and take the
   place of the old ones, and the new model starts embedding queries — one assignment
   of the serving snapshot (service/active_model.py).

An item the new version cannot embed now (its file unreadable for a while, a decode
that ran out of time, a full disk) keeps the vectors it is found by: it is left out of
this switch, never marked failed by it. More than SWAP_WHEN_LEFT such items fail the
switch (tried again after RETRY_AFTER_S; the old version serves everything meanwhile);
fewer are swapped without, and the repair below embeds them.

Repair: while no switch runs, every MMV_REPAIR_EVERY_S, ready items without a vector of
the serving version are embedded with it: the few a switch left out, and those another
replica stored with the version it still served (PostgreSQL), or this process between
the database's commit of a switch and a swap that failed. The change log brings them
into every replica's indexes. An item that fails MAX_EMBED_TRIES repairs in a row is
marked failed with the reason.

Searches answer from the old version until the swap and from the new one after it;
each search batch reads one snapshot, so no answer mixes the two. An upload embedded
by the old version that finishes after the swap is embedded again (service/ingest.py).
The active version changes only in that one transaction, so a process killed at any
moment restarts serving one whole version, and goes on with the switch from the
vectors already stored. A version's vectors stay after a switch away from it: rolling
back embeds only what came since.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Container, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from indexer import RebuildError
from model.media.segments import tiling_window_count
from service.active_model import ActiveModel
from service.embedder import Embedder, ModelHandle
from service.indexes import StorageSource, layout_of
from service.ingest import Ingestor
from service.media_jobs import media_limits, window_plan
from service.media_worker import (
    MediaPool,
    ReembedJob,
    ReembedResult,
    StoredItem,
    WorkerCrashed,
    WorkerOutOfMemory,
    embed_stored,
)
from service.prometheus import Metrics
from service.settings import Settings
from service.storage import Embedding, ItemRow, Storage, UnknownVersion

log = logging.getLogger("service.switch")

# Items a media worker embeds in one task (≈ 0.5 s of its time; an upload waits behind
# at most that). Items per CPU-s at 16/32/64/128: 112/118/123/126 (bench/reindex.py).
# A pass over fewer items makes smaller tasks, so that every worker gets some.
CHUNK = 64
MIN_CHUNK = 8
# A task holds its items' decoded windows in memory at once: 64 one-hour items of the
# tiny config are ~26 GB, which killed the worker, failed the switch, and failed it again
# at each retry on the same chunk. So a task holds at most this much (an item larger
# than it goes alone, as its upload did).
CHUNK_WINDOW_BYTES = 512 * 2**20
IN_FLIGHT = 4  # tasks queued at once (two per worker keeps both busy)
TEXT_CHUNK = 256
BUILD_CHECK_S = 1.0  # how often an index build looks whether it is still wanted
SWAP_WHEN_LEFT = 64  # catch up until at most this many items remain, then swap
RETRY_AFTER_S = 30.0  # a failed switch is tried again after this long
MAX_EMBED_TRIES = 3  # repairs that fail to embed an item before it is marked failed


class UnembeddedItems(RuntimeError):
    """Too many items could not be embedded with the new version to swap without them."""


class SwitchCalledOff(Exception):
    """The target changed (another version asked for, or the active one again)."""


@dataclass
class SwitchStatus:
    to_version: str
    stage: str  # loading | waiting | embedding | indexing | catching_up | swapping | done | ...
    done: int = 0  # items embedded with the new version in this switch
    total: int = 0  # items that had to be
    failed_items: int = 0  # items that could not be embedded (left for the repair)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.stage not in ("done", "failed", "called_off")

    @property
    def failure(self) -> str | None:
        """Why the last try failed, while that is where the switch stands."""
        return self.error if self.stage == "failed" else None

    def add_done(self, n: int) -> None:
        """`n` more items embedded. Uploads stored with the old version while a pass
        runs are embedded in that pass too: they count in the total as well, which read
        "1200 of 1000 items" otherwise."""
        self.done += n
        self.total = max(self.total, self.done + self.failed_items)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class VersionSwitch:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        model: ActiveModel,
        ingestor: Ingestor,
        pool: MediaPool,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.model = model
        self.ingestor = ingestor
        self.pool = pool
        self.metrics = metrics
        self.status: SwitchStatus | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failed_at: dict[str, float] = {}
        self._repaired_at = 0.0
        # seq -> (repairs that failed to embed it, when it may be tried again)
        self._embed_tries: dict[int, tuple[int, float]] = {}

    # -- noticing a target -------------------------------------------------------------
    async def watch(self) -> None:
        """Poll the database for a version to switch to (the API's background task)."""
        while True:
            await asyncio.sleep(self.settings.switch_poll_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # never let a database hiccup end the watch
                log.exception("checking for a model version to switch to failed")

    def wanted(self) -> str | None:
        """The version this replica should serve: the one asked for, else the active one
        (another replica may have completed a switch this one has not made yet)."""
        target = self.storage.models.target()
        if target is not None:
            return target
        active = self.storage.models.active()
        return active.version if active is not None else None

    def check(self) -> None:
        """Start a switch when the database wants a version that does not serve here;
        else, now and then, a repair of the serving version's vectors."""
        serving = self.model.serving
        if serving is None:
            return
        target = self.wanted()
        if target is None:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if target == serving.version:
                if self.status is not None and self.status.to_version != target:
                    self.status = None  # a failed try for a version no longer wanted
                if time.monotonic() - self._repaired_at >= self.settings.repair_every_s:
                    self._repaired_at = time.monotonic()
                    self._thread = threading.Thread(
                        target=self._repair_logged, name="repair", daemon=True
                    )
                    self._thread.start()
                return
            if time.time() - self._failed_at.get(target, 0.0) < RETRY_AFTER_S:
                return
            self.status = SwitchStatus(target, "loading")
            self._thread = threading.Thread(
                target=self._run, args=(self.status,), name=f"switch-{target}", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    # -- the switch --------------------------------------------------------------------
    def _run(self, status: SwitchStatus) -> None:
        version = status.to_version
        started = time.perf_counter()
        try:
            self._switch(status)
        except SwitchCalledOff:
            status.stage = "called_off"
            log.info("switch to %s called off: another version was asked for", version)
            if self.storage.models.get(version) is None:  # deleted since: nothing of it stays
                shutil.rmtree(self.settings.indexes_dir / version, ignore_errors=True)
        except Exception as exc:  # reported on /readyz and retried later; the old one serves
            status.stage, status.error = "failed", f"{type(exc).__name__}: {exc}"
            self._failed_at[version] = time.time()
            log.exception("switch to model version %s failed", version)
        finally:
            status.finished_at = time.time()
            indexes = self.model.indexes
            if status.stage != "done" and indexes is not None:
                indexes.discard_next()
        if status.stage == "done":
            log.info(
                "switched to model version %s in %.1f s: %d items embedded again, %d failed",
                version, time.perf_counter() - started, status.done, status.failed_items,
            )  # fmt: skip

    def _wanted_still(self, version: str) -> bool:
        """False once another version is asked for; True while the database cannot say
        (the build goes on: a hiccup must not throw minutes of it away)."""
        try:
            return self.wanted() == version
        except Exception:
            log.warning("could not check which version is wanted; the index build goes on")
            return True

    def _still_wanted(self, version: str) -> None:
        if self.wanted() != version:
            raise SwitchCalledOff()

    def _switch(self, status: SwitchStatus) -> None:
        version = status.to_version
        registry = self.model.indexes
        assert registry is not None
        embedder = Embedder.load(
            ModelHandle(version, self.settings.models_dir / version), self.settings.device
        )
        self._still_wanted(version)

        status.stage = "embedding"
        failed: dict[int, str] = {}  # seq -> why: left out of this switch, kept as they are
        # One replica embeds the stored items (the others would repeat its work); the
        # rest wait for it, then embed only what came to them meanwhile.
        with self.storage.db.exclusive(f"switch:{version}") as leading:
            if leading:
                status.total = self.storage.items.count_lacking_embeddings(version)
                self._embed_lacking(embedder, status, failed)
        if not leading:
            self._wait_for_leader(version, status)
        self._still_wanted(version)

        status.stage = "indexing"
        self.storage.db.analyze()  # the new version's vectors were just written in bulk
        registry.wait_rebuild()
        registry.discard_next()  # a set left built by a switch that was called off
        dims = {space: embedder.dim(space) for space in embedder.model.spaces}
        registry.start_rebuild(
            version, layout_of(embedder.index_pairs()), dims,
            StorageSource(self.storage, version), swap=False,
        )  # fmt: skip
        # Minutes on a large collection: another version asked for meanwhile calls it off.
        while not registry.wait_rebuild(BUILD_CHECK_S):
            if not self._wanted_still(version):
                registry.cancel_rebuild()
                registry.wait_rebuild()
                raise SwitchCalledOff()
        built = registry.rebuild_status() or {}
        if built.get("state") != "ready":
            raise RebuildError(f"building the indexes failed: {built.get('error')}")

        status.stage = "catching_up"
        for _ in range(5):  # uploads keep coming: each pass leaves fewer behind
            self._still_wanted(version)
            left = self.storage.items.count_lacking_embeddings(version) - len(failed)
            if left <= SWAP_WHEN_LEFT:
                break
            status.total += left
            self._embed_lacking(embedder, status, failed)
        if len(failed) > SWAP_WHEN_LEFT:
            seq, why = next(iter(failed.items()))
            raise UnembeddedItems(
                f"{len(failed)} items could not be embedded with model version {version}"
                f" (item seq {seq}: {why}); they keep being found with the serving version,"
                f" and the switch is tried again in {RETRY_AFTER_S:.0f} s"
            )

        status.stage = "swapping"
        with self.ingestor.index_lock:  # uploads wait here; searches do not
            status.total += self.storage.items.count_lacking_embeddings(version) - len(failed)
            self._embed_lacking(embedder, status, failed)
            if not self.storage.models.complete_switch(version):
                self._still_wanted(version)  # else another replica completed it: swap too
            registry.swap(version, save=False)  # a last catch-up with the database
            self.model.use(embedder, registry)
            self.metrics.set_model(version)
            status.stage = "done"  # the new version serves: /readyz reports no switch
        registry.save_swapped()  # uploads go on meanwhile (they add to the saved set)
        try:  # what this replica serves now, for other replicas' DELETEs (not a beat later)
            self.storage.heartbeats.beat(self.settings.replica_name, "api", version)
        except Exception:  # the next regular beat says it
            log.exception("could not record the version this replica serves")
        if failed:
            log.warning(
                "%d items could not be embedded with %s and are left to the repair: %s",
                len(failed), version, "; ".join(f"seq {s}: {w}" for s, w in failed.items()),
            )  # fmt: skip

    # -- the repair ----------------------------------------------------------------------
    def _repair_logged(self) -> None:
        try:
            self.repair()
        except Exception:  # a database hiccup or a worker crash: the next round tries again
            log.exception("embedding the items the serving version lacks failed")

    def repair(self) -> int:
        """Embed, with the serving version, the ready items that have no vector of it
        (those that failed lately wait: MMV_REPAIR_EVERY_S doubled per failure); returns
        how many were embedded. One replica at a time (the switch's database lock)."""
        serving = self.model.serving
        if serving is None:
            return 0
        version = serving.version
        now = time.monotonic()
        waiting = {seq for seq, (_, after) in self._embed_tries.items() if after > now}
        with self.storage.db.exclusive(f"switch:{version}") as leading:
            if not leading:
                return 0
            lacking = self.storage.items.count_lacking_embeddings(version) - len(waiting)
            if lacking <= 0:
                return 0
            status = SwitchStatus(version, "repairing", total=lacking)
            failed: dict[int, str] = {}
            try:
                self._embed_lacking(serving.embedder, status, failed, skip=waiting)
            except SwitchCalledOff:  # another version is asked for: the switch goes first
                return status.done
        embedded = status.done  # items whose vectors were stored
        for seq, why in failed.items():
            tries = self._embed_tries.get(seq, (0, 0.0))[0] + 1
            if tries < MAX_EMBED_TRIES:
                wait_s = self.settings.repair_every_s * 2**tries
                self._embed_tries[seq] = (tries, time.monotonic() + wait_s)
                continue
            self._embed_tries.pop(seq)
            self.storage.items.mark_failed(
                seq, f"could not be embedded with model version {version} ({tries} tries): {why}"
            )
        for seq in [s for s in self._embed_tries if s not in failed and s not in waiting]:
            del self._embed_tries[seq]  # embedded (or deleted) since
        log.info(
            "repair: %d items embedded with %s, %d could not be", embedded, version, len(failed)
        )
        return embedded

    def _wait_for_leader(self, version: str, status: SwitchStatus) -> None:
        """Until the replica embedding the stored items for `version` is done (or has
        died: the database frees its lock either way); what is left is this one's."""
        status.stage = "waiting"
        while True:
            self._still_wanted(version)
            with self.storage.db.exclusive(f"switch:{version}") as free:
                if free:
                    break
            time.sleep(self.settings.switch_poll_s)
        status.stage = "embedding"
        status.total = self.storage.items.count_lacking_embeddings(version)

    # -- embedding what the new version lacks ------------------------------------------
    def _lacking(
        self, version: str, failed: Container[int], skip: Container[int]
    ) -> Iterator[list[ItemRow]]:
        after = 0
        while True:
            rows = self.storage.items.lacking_embeddings(version, CHUNK * IN_FLIGHT, after)
            if not rows:
                return
            after = rows[-1].seq
            yield [r for r in rows if r.seq not in failed and r.seq not in skip]

    def _embed_lacking(
        self,
        embedder: Embedder,
        status: SwitchStatus,
        failed: dict[int, str],
        skip: Container[int] = (),
    ) -> None:
        """One pass over the ready items without a vector of `embedder`'s version (but
        those in `failed` or `skip`); what cannot be embedded goes into `failed`."""
        version = embedder.version
        lacking = status.total - status.done  # this pass's items (the caller counted them)
        chunk = max(MIN_CHUNK, min(CHUNK, -(-lacking // IN_FLIGHT)))
        pending: list[tuple[Future[ReembedResult], ReembedJob]] = []
        for rows in self._lacking(version, failed, skip):
            self._still_wanted(version)  # a switch called off stops within a page
            texts = [r for r in rows if r.kind == "text"]
            media = [r for r in rows if r.kind != "text" and r.content_hash]
            for job in self._jobs(embedder, media, chunk):
                while len(pending) >= IN_FLIGHT:
                    self._collect(*pending.pop(0), status, failed)
                pending.append((self.pool.submit(embed_stored, job), job))
            for start in range(0, len(texts), TEXT_CHUNK):
                self._embed_texts(embedder, texts[start : start + TEXT_CHUNK], status)
        for future, job in pending:
            self._collect(future, job, status, failed)

    def _collect(
        self,
        future: Future[ReembedResult],
        job: ReembedJob,
        status: SwitchStatus,
        failed: dict[int, str],
    ) -> None:
        """Store a task's result. A task whose worker died or ran out of memory is tried
        again item by item: the one file behind it (too big, a decoder that crashes on
        it) fails alone instead of failing its whole chunk, and the switch with it, again
        at every retry."""
        try:
            result = future.result()
        except (WorkerCrashed, WorkerOutOfMemory) as exc:
            if len(job.items) == 1:
                result = ReembedResult({}, {job.items[0].seq: str(exc)}, 0)
            else:
                log.warning("a re-embedding task of %d items failed (%s); trying each alone",
                            len(job.items), exc)  # fmt: skip
                for item in job.items:
                    alone = replace(job, items=[item])
                    self._collect(self.pool.submit(embed_stored, alone), alone, status, failed)
                return
        self._store(job.version, result, status, failed)

    def _jobs(self, embedder: Embedder, rows: list[ItemRow], chunk: int) -> list[ReembedJob]:
        """`rows` in tasks of at most `chunk` items and CHUNK_WINDOW_BYTES of windows."""
        job = self._job(embedder, rows)
        config = embedder.config
        per_window = config.video.frames * config.video.crop_size**2 * 3 + config.audio_samples * 4
        jobs: list[ReembedJob] = []
        part: list[StoredItem] = []
        held = 0
        for item in job.items:
            size = (item.n_windows or 10) * per_window  # None: at most 10 (window_plan)
            if part and (len(part) >= chunk or held + size > CHUNK_WINDOW_BYTES):
                jobs.append(replace(job, items=part))
                part, held = [], 0
            part.append(item)
            held += size
        if part:
            jobs.append(replace(job, items=part))
        return jobs

    def _job(self, embedder: Embedder, rows: list[ItemRow]) -> ReembedJob:
        clip_s = embedder.config.clip_seconds
        items = []
        for r in rows:
            # The segments ingestion cut stay as they are (their seqs are FAISS ids); the
            # file is decoded as ingestion decoded it (the decode cache's key).
            segments = self.storage.segments.of_item(r.seq)
            n_windows, _ = window_plan(r.kind, r.duration_s, self.settings, clip_s, False)
            if segments:
                n_windows = tiling_window_count(r.duration_s, clip_s)
            items.append(
                StoredItem(
                    seq=r.seq,
                    path=str(self.settings.media_dir / r.content_hash),  # type: ignore[operator]
                    content_hash=r.content_hash,  # type: ignore[arg-type]
                    modalities=tuple(m for m in r.modalities if m in ("video", "audio", "image")),
                    n_windows=n_windows,
                    segments=[(g.seq, g.start_s, g.end_s) for g in segments],
                )
            )
        return ReembedJob(
            items=items,
            model_dir=str(self.settings.models_dir / embedder.version),
            version=embedder.version,
            cache_dir=str(self.settings.cache_dir),
            limits=media_limits(self.settings),
        )

    def _store(
        self, version: str, result: ReembedResult, status: SwitchStatus, failed: dict[int, str]
    ) -> None:
        # Segments first: an item counts as embedded once its own vectors are stored.
        segment_rows = [(seq, e) for seq, vectors in result.segments.items() for e in vectors]
        rows = [(seq, e) for seq, vectors in result.embeddings.items() for e in vectors]
        try:
            if segment_rows:
                self.storage.segments.add_for_stored(version, segment_rows)
            if rows:
                self.storage.embeddings.add_for_stored(version, rows)
        except UnknownVersion:  # deleted (after it was called off): nothing more of it
            raise SwitchCalledOff() from None
        for seq, why in result.failed.items():
            log.warning("item seq %d cannot be embedded with %s: %s", seq, version, why)
            failed[seq] = why
        status.failed_items = len(failed)
        status.add_done(len(result.embeddings))

    def _embed_texts(self, embedder: Embedder, rows: list[ItemRow], status: SwitchStatus) -> None:
        vectors = embedder.embed_texts([r.text or "" for r in rows])
        try:
            self.storage.embeddings.add_for_stored(
                embedder.version,
                [(r.seq, Embedding(space, "text", v[n])) for space, v in vectors.items()
                 for n, r in enumerate(rows)],
            )  # fmt: skip
        except UnknownVersion:
            raise SwitchCalledOff() from None
        status.add_done(len(rows))
