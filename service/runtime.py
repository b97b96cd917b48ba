"""Everything one running service holds, and its start-up and shutdown order.

Start, quick (the lifespan; uvicorn answers once it returns): data directory -> storage
(migrated) -> media worker processes -> heartbeat. Then, in the background so that
/healthz answers all along (`/readyz` says `starting`, model routes 503 with
Retry-After): reconcile (service/reconcile.py: media, rows, vectors) -> model
(registered from MMV_MODEL at first start) -> indexes (loaded, patched or rebuilt from
stored embeddings: minutes on a large collection) -> search batcher -> items left
`processing` (by an earlier run, or by a replica that died) resume -> demo corpus when
the data directory is empty and MMV_DEMO_CLIPS > 0. A start-up that fails there stops
the server (exit status 1).

Once it serves, in the background: index upkeep every minute, the watch for a model version to
switch to (service/version_switch.py), the change log followed (service/
change_follower.py: what other replicas store and delete), and this replica's
heartbeat, with which a live replica takes over the uploads of one that died (and
processes again its own whose processing stopped with no outcome stored).

Stop (after uvicorn has finished the in-flight requests): background processing is
drained, the batcher stops, indexes are saved, workers and storage close.

Routes reach what they need through service/deps.py; nothing here answers requests.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from model.media.decode_cache import DecodeCache
from service import media_links as links
from service.active_model import ActiveModel
from service.change_follower import ChangeFollower
from service.demo import ensure_demo_corpus
from service.embedder import Embedder, ModelHandle
from service.example_search import ExampleEmbedder
from service.indexes import open_indexes
from service.ingest import Ingestor
from service.media_files import MediaFiles
from service.media_worker import MediaPool
from service.model_versions import active_model_version
from service.prometheus import Metrics
from service.reconcile import reconcile_at_start
from service.searcher import Searcher
from service.segment_backfill import SegmentBackfill
from service.settings import Settings
from service.storage import ItemRow, Storage
from service.storage.rows import rfc3339
from service.version_switch import VersionSwitch

log = logging.getLogger("service.runtime")

UPKEEP_EVERY_S = 60.0  # save changed indexes and rebuild outgrown ones this often
CACHE_SWEEP_EVERY_S = 3600.0  # decode cache entries of files no item names go this often
CACHE_SWEEP_AGE_S = 3600.0  # ... once untouched this long (work under way is younger)
STALLED_AFTER_S = 120.0  # an own item `processing` with no task this old is taken again
HEARTBEATS_PER_TIMEOUT = 3  # beats in MMV_REPLICA_TIMEOUT_S: one late beat is no death
TMP_STALE_S = 86400.0  # another replica's upload leftovers older than this are removed


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        for folder in (
            settings.data_dir,
            settings.media_dir,
            settings.models_dir,
            settings.indexes_dir,
            settings.cache_dir,
            settings.tmp_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        remove_upload_leftovers(settings)
        self.storage = Storage(settings.database, settings.db_pool_size)
        stored = self.storage.state.get_or_set(links.SECRET_KEY, links.new_random_secret())
        self.media_link_secret = links.link_secret(settings, stored)
        log.info("database: %s (%s)", self.storage.db.name, self.storage.db.engine)
        self.model = ActiveModel()  # empty until start() loads one
        self.search_executor = ThreadPoolExecutor(
            settings.search_threads, thread_name_prefix="search"
        )
        # The heartbeat's own thread: in the shared default pool (a few threads on few
        # cores, held by the backfill and by uploads waiting on the index lock) a beat
        # could wait past MMV_REPLICA_TIMEOUT_S, and other replicas took this one's
        # uploads while it processed them.
        self.beat_executor = ThreadPoolExecutor(1, thread_name_prefix="heartbeat")
        self._takeover_lock = asyncio.Lock()
        self.media_pool = MediaPool(settings.workers, settings.media_worker_memory_mb or None)
        self.media_files = MediaFiles(settings.media_dir)
        self.ingestor = Ingestor(
            settings,
            self.storage,
            metrics,
            self.media_pool,
            self.media_files,
            self.search_executor,
            self.model,
        )
        self.searcher = Searcher(self.storage, self.model, metrics, self.search_executor, settings)
        self.examples = ExampleEmbedder(settings, self.model, self.media_pool, metrics)
        self.switch = VersionSwitch(
            settings, self.storage, self.model, self.ingestor, self.media_pool, metrics
        )
        self.backfill = SegmentBackfill(
            settings, self.storage, self.model, self.media_pool, self.ingestor.index_lock
        )
        self.follower = ChangeFollower(settings, self.storage, self.model, self.ingestor.index_lock)
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: asyncio.Task[None] | None = None
        self.failed: Exception | None = None  # why start-up gave up (the exit status says 1)
        self._stopping = False
        self._swept_at = time.monotonic()  # the first sweep an hour after start-up
        # How a failed start-up stops the process: `python -m service` sets uvicorn's
        # should_exit (then exits 1); elsewhere SIGTERM, which uvicorn handles the same.
        self.stop_server: Callable[[], None] = lambda: signal.raise_signal(signal.SIGTERM)

    # -- start-up ----------------------------------------------------------------------
    def load_model_and_indexes(self) -> None:
        """The slow, synchronous part of start-up (model load, index open)."""
        reconcile_at_start(self.storage, self.media_files)  # before the indexes open
        handle = active_model_version(
            self.settings.model, self.settings.models_dir, self.storage,
            shared=self.settings.shared_database,
        )  # fmt: skip
        if handle is None:
            return
        self.model.loading = handle.version
        try:
            self._load(handle)
        finally:
            self.model.loading = None

    def _load(self, handle: ModelHandle) -> None:
        self.beat()  # names the version loading before its vectors are read
        self.follower.start_at_now()  # the indexes below reflect the database from here
        self.storage.db.analyze()
        embedder = Embedder.load(handle, self.settings.device)
        started = time.perf_counter()
        indexes = open_indexes(
            self.settings.indexes_dir,
            self.storage,
            embedder.version,
            embedder.index_pairs(),
            {space: embedder.dim(space) for space in embedder.model.spaces},
            self.settings.index_memory_mb * 1024 * 1024,
        )
        for event in indexes.active.events:
            log.info("index %s %s: %s", event.index, event.action, event.reason)
        log.info(
            "model %s on %s, indexes ready in %.1f s: %s",
            embedder.version,
            embedder.device_kind,
            time.perf_counter() - started,
            indexes.active.counts(),
        )
        self.model.use(embedder, indexes)
        self.metrics.set_model(embedder.version)

    async def start(self, on_ready: Callable[[], None] | None = None) -> None:
        """The quick part of start-up; the rest runs in the background (`_serve`).

        Loading the model and opening its indexes can take minutes on a large collection
        (an index rebuilt from stored embeddings), and uvicorn answers nothing until the
        lifespan's start-up returns: a liveness probe would restart the server forever.
        So /healthz answers at once; /readyz says `starting` and model routes answer 503
        `no_model` (with Retry-After) until the model serves. `on_ready` runs then."""
        self.media_pool.start()
        await asyncio.to_thread(self.beat)
        self.model.starting = True
        loop = asyncio.get_running_loop()
        # Beating while the model loads (minutes on a large collection): a replica silent
        # that long counts as gone, and so would the version it is loading.
        self._tasks.append(loop.create_task(self._heartbeat_loop()))
        self._starting = loop.create_task(self._serve(on_ready))

    async def _serve(self, on_ready: Callable[[], None] | None) -> None:
        try:
            await asyncio.to_thread(self.load_model_and_indexes)
        except Exception as exc:  # a broken model or database: nothing can serve
            log.critical("start-up failed, stopping: %s", exc, exc_info=True)
            self.failed = exc
            self.stop_server()
            return
        finally:
            self.model.starting = False
        if self._stopping:
            return
        model = self.model
        self.metrics.watch_indexes(lambda: model.indexes.active.counts() if model.indexes else {})
        if model.embedder is not None:
            self.media_pool.warm_up(
                self.settings.models_dir / model.embedder.version,
                model.embedder.version,
                self.settings.asr,
            )
            self.searcher.batcher.start()
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(self._upkeep_loop()),
            loop.create_task(self.switch.watch()),
            loop.create_task(self.follower.watch()),
            loop.create_task(self._takeover_loop()),
            loop.create_task(self.backfill.watch()),
        ]
        # After the loops start: a database hiccup here must not leave this replica
        # without its heartbeat, upkeep and follower (the heartbeat takes over again).
        if model.embedder is not None:
            try:
                # Own items of an earlier run (a crash, or a stop that timed out) included.
                await self.take_over_uploads(at_start=True)
            except Exception:
                log.exception("taking up unfinished uploads failed; the heartbeat tries again")
        try:
            await ensure_demo_corpus(self.settings, self.storage, self.ingestor)
        except Exception:
            log.exception("the demo corpus could not be made")
        if on_ready is not None:
            on_ready()

    async def take_over_uploads(self, at_start: bool = False) -> int:
        """Process the items left `processing` by replicas no longer alive (at start, by
        this replica's earlier run too). One round at a time: two at once would both
        start an item the first adopted before it is in flight."""
        async with self._takeover_lock:
            return await self._take_over_uploads(at_start)

    async def _take_over_uploads(self, at_start: bool) -> int:
        rows = await asyncio.to_thread(self._adopt_uploads, at_start)
        # At start every `processing` row is adopted, one an earlier round took up too.
        rows = [r for r in rows if r.seq not in self.ingestor.in_flight]
        if rows:
            who = "an earlier run or a stopped replica" if at_start else "a replica that died"
            log.info("processing %d uploads left unfinished by %s", len(rows), who)
        # This replica's own, whose processing ended with no outcome stored (the database
        # failed as their failure was recorded): processed again rather than left
        # `processing` until a restart. Young ones may be between their row and their
        # task (seconds at most): left alone for STALLED_AFTER_S.
        # In flight before the rows are read: one that ends meanwhile is not taken again.
        busy = set(self.ingestor.in_flight)
        cutoff = rfc3339(time.time() - STALLED_AFTER_S)
        mine = await asyncio.to_thread(
            self.storage.items.processing_of, self.settings.replica_name, cutoff
        )
        # Nor one in flight now: an upload of a failed item's bytes marks it in flight,
        # then `processing` (with its old creation time, so no grace).
        stalled = [r for r in mine if r.seq not in busy and r.seq not in self.ingestor.in_flight]
        if stalled:
            log.warning("processing %d uploads again: their processing stopped unfinished",
                        len(stalled))  # fmt: skip
        rows += [r for r in stalled if r.seq not in {t.seq for t in rows}]
        no_asr = await asyncio.to_thread(self.storage.items.without_asr, [r.seq for r in rows])
        for row in rows:
            self.ingestor.spawn(row, asr=row.seq not in no_asr)  # as its upload asked
        return len(rows)

    def _adopt_uploads(self, at_start: bool) -> list[ItemRow]:
        me = self.settings.replica_name
        live = self.storage.heartbeats.live("api", self.settings.replica_timeout_s)
        if at_start:
            # With SQLite this is the only API process there can be: all are left over.
            live = [n for n in live if n != me] if self.settings.shared_database else []
        return self.storage.items.adopt_processing(me, live)

    def beat(self) -> None:
        """This replica is alive, and serves this version (which no DELETE may take)."""
        serving = self.model.serving
        version = serving.version if serving is not None else self.model.loading
        self.storage.heartbeats.beat(self.settings.replica_name, "api", version)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica_timeout_s / HEARTBEATS_PER_TIMEOUT)
            try:
                await asyncio.get_running_loop().run_in_executor(self.beat_executor, self.beat)
            except Exception:  # a database hiccup: the next beat tries again
                log.exception("heartbeat failed")

    async def _takeover_loop(self) -> None:
        """Beside the heartbeat, not after it: its database work, in the shared thread
        pool, must not hold the next beat back."""
        while True:
            await asyncio.sleep(self.settings.replica_timeout_s / HEARTBEATS_PER_TIMEOUT)
            try:
                if self.model.embedder is not None:
                    await self.take_over_uploads()
            except Exception:  # a database hiccup: the next round tries again
                log.exception("taking over unfinished uploads failed")

    async def _upkeep_loop(self) -> None:
        while True:
            await asyncio.sleep(UPKEEP_EVERY_S)
            try:
                await asyncio.to_thread(self.upkeep)
            except Exception:  # upkeep must never take the server down
                log.exception("index upkeep failed; retrying in %.0f s", UPKEEP_EVERY_S)

    def upkeep(self) -> None:
        """Rebuild indexes that outgrew their type (logged by the indexer), save changes;
        put the jobs of workers that died back in the queue (with no worker running,
        nothing else would)."""
        for job in self.storage.jobs.expire_leases():
            log.warning("training job %s: %s", job.id, job.error)
        self.storage.changes.prune()
        if time.monotonic() - self._swept_at >= CACHE_SWEEP_EVERY_S:
            self._swept_at = time.monotonic()
            self.sweep_decode_cache(CACHE_SWEEP_AGE_S)
            self.sweep_index_folders()
        serving = self.model.serving
        if self.model.indexes is not None and serving is not None:
            if self.settings.shared_database and self.storage.models.get(serving.version):
                # What the change log could not tell (a change committed long after its
                # number was taken): added or removed now. Not against a version deleted
                # under this replica (it has no vectors left: the indexes would empty).
                with self.ingestor.index_lock:
                    fixed = self.model.indexes.active.reconcile()
                for name, (added, removed) in fixed.items():
                    if added or removed:
                        log.warning("index %s caught up with the database: +%d -%d",
                                    name, added, removed)  # fmt: skip
            self.model.indexes.maintain()
            self.model.indexes.save()

    def sweep_index_folders(self) -> list[str]:
        """This host's index folders of versions no row names: a version deleted through
        another replica leaves its indexes here (each replica keeps its own), up to the
        index memory budget's worth each. Returns the versions removed."""
        listed = {m.version for m in self.storage.models.all()}
        serving = self.model.serving
        if serving is not None:
            listed.add(serving.version)
        removed = []
        for folder in sorted(self.settings.indexes_dir.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in listed:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        if removed:
            log.info("removed the indexes of deleted versions %s", ", ".join(removed))
        return removed

    def sweep_decode_cache(self, older_than_s: float) -> tuple[int, int]:
        """This host's decode cache entries of files no item names any more: deleted on
        another host, example queries, builds cut short. Returns (entries, bytes)."""
        in_use = self.storage.items.media_in_use()
        entries, size = DecodeCache(self.settings.cache_dir).sweep(in_use, older_than_s)
        if entries:
            log.info("decode cache: removed %d entries (%.1f MB) of files no item names",
                     entries, size / 1e6)  # fmt: skip
        return entries, size

    # -- shutdown ----------------------------------------------------------------------
    async def stop(self) -> None:
        self._stopping = True
        if self._starting is not None and not self._starting.done():
            # Stopped while loading: the load thread cannot be interrupted; wait for it
            # (bounded) so that storage is not closed under it.
            log.info("stopping during start-up: waiting for the model and indexes to load")
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._starting), self.settings.shutdown_timeout_s
                )
            except (TimeoutError, asyncio.CancelledError):
                log.warning("start-up did not finish within MMV_SHUTDOWN_TIMEOUT_S")
            self._starting.cancel()
        await self.ingestor.drain(self.settings.shutdown_timeout_s)
        for task in self._tasks:
            task.cancel()
        try:  # what is still processing is taken over by another replica at once
            await asyncio.to_thread(self.storage.heartbeats.forget, self.settings.replica_name)
        except Exception:  # then after MMV_REPLICA_TIMEOUT_S instead
            log.exception("could not sign this replica off")
        await self.searcher.batcher.stop()
        if self.model.indexes is not None:
            try:
                await asyncio.to_thread(self.model.indexes.save)
            except Exception:  # the next start patches or rebuilds from the database
                log.exception("could not save the indexes at shutdown")
        await asyncio.to_thread(self.media_pool.shutdown)
        self.search_executor.shutdown(wait=True)
        self.beat_executor.shutdown(wait=True)
        self.storage.close()
        log.info("stopped")


def remove_upload_leftovers(settings: Settings) -> None:
    """Uploads an earlier run of this replica was receiving (a crash mid-upload) are
    never needed again; other replicas' folders only when long untouched (they share
    the data directory and may be receiving now)."""
    own = settings.tmp_dir
    for leftover in own.iterdir():
        _remove(leftover)
    if settings.shared_database:
        for folder in own.parent.iterdir():
            if folder != own and time.time() - folder.stat().st_mtime > TMP_STALE_S:
                _remove(folder)


def _remove(path: Path) -> None:
    if path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
