"""Everything one running service holds, and its start-up and shutdown order.

Start: data directory -> storage -> model (registered from MMV_MODEL at first start)
-> indexes (loaded, patched or rebuilt from stored embeddings) -> media worker
processes -> search batcher -> items left `processing` resume -> demo corpus when
the data directory is empty and MMV_DEMO_CLIPS > 0.

Then, in the background: index upkeep every minute, and the watch for a model version
to switch to (service/version_switch.py).

Stop (after uvicorn has finished the in-flight requests): background processing is
drained, the batcher stops, indexes are saved, workers and storage close.

Routes reach what they need through service/deps.py; nothing here answers requests.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from service.active_model import ActiveModel
from service.demo import ensure_demo_corpus
from service.embedder import Embedder
from service.example_search import ExampleEmbedder
from service.indexes import open_indexes
from service.ingest import Ingestor
from service.media_files import MediaFiles
from service.media_worker import MediaPool
from service.model_versions import active_model_version
from service.prometheus import Metrics
from service.searcher import Searcher
from service.segment_backfill import SegmentBackfill
from service.settings import Settings
from service.storage import Storage
from service.version_switch import VersionSwitch

log = logging.getLogger("service.runtime")

UPKEEP_EVERY_S = 60.0  # save changed indexes and rebuild outgrown ones this often


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
        # Upload leftovers of an earlier run (a crash mid-upload) are never needed again.
        for leftover in settings.tmp_dir.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
        self.storage = Storage(settings.db_path)
        orphans = MediaFiles(settings.media_dir).remove_orphans(self.storage.items.content_hashes())
        if orphans:
            log.warning("removed %d media files no item names (left by a crash)", len(orphans))
        self.model = ActiveModel()  # empty until start() loads one
        self.search_executor = ThreadPoolExecutor(
            settings.search_threads, thread_name_prefix="search"
        )
        self.media_pool = MediaPool(settings.workers)
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
        self._upkeep: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._backfill: asyncio.Task[None] | None = None

    # -- start-up ----------------------------------------------------------------------
    def load_model_and_indexes(self) -> None:
        """The slow, synchronous part of start-up (model load, index open)."""
        handle = active_model_version(self.settings.model, self.settings.models_dir, self.storage)
        if handle is None:
            return
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

    async def start(self) -> None:
        await asyncio.to_thread(self.load_model_and_indexes)
        model = self.model
        self.metrics.watch_indexes(lambda: model.indexes.active.counts() if model.indexes else {})
        self.media_pool.start()
        if model.embedder is not None:
            self.media_pool.warm_up(
                self.settings.models_dir / model.embedder.version,
                model.embedder.version,
                self.settings.asr,
            )
            self.searcher.batcher.start()
            resumed = await asyncio.to_thread(self.ingestor.resume_pending)
            if resumed:
                log.info("resuming %d items left processing by the last run", resumed)
        loop = asyncio.get_running_loop()
        self._upkeep = loop.create_task(self._upkeep_loop())
        self._watch = loop.create_task(self.switch.watch())
        await ensure_demo_corpus(self.settings, self.storage, self.ingestor)
        self._backfill = loop.create_task(self.backfill.watch())

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
        if self.model.indexes is not None:
            self.model.indexes.maintain()
            self.model.indexes.save()

    # -- shutdown ----------------------------------------------------------------------
    async def stop(self) -> None:
        await self.ingestor.drain(self.settings.shutdown_timeout_s)
        for task in (self._upkeep, self._watch, self._backfill):
            if task is not None:
                task.cancel()
        await self.searcher.batcher.stop()
        if self.model.indexes is not None:
            try:
                await asyncio.to_thread(self.model.indexes.save)
            except Exception:  # the next start patches or rebuilds from the database
                log.exception("could not save the indexes at shutdown")
        await asyncio.to_thread(self.media_pool.shutdown)
        self.search_executor.shutdown(wait=True)
        self.storage.close()
        log.info("stopped")
