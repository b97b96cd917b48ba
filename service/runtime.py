"""Everything one running service holds, and its start-up and shutdown order.

Start: data directory -> storage -> model (registered from MMV_MODEL at first start)
-> indexes (loaded, patched or rebuilt from stored embeddings) -> media worker
processes -> search batcher -> items left `processing` resume -> demo corpus when
the data directory is empty and MMV_DEMO_CLIPS > 0.

Stop (after uvicorn has finished the in-flight requests): background processing is
drained, the batcher stops, indexes are saved, workers and storage close.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.requests import Request

from indexer import IndexRegistry
from service import errors
from service.embedder import Embedder
from service.indexes import open_indexes
from service.ingest import Ingestor
from service.media_worker import MediaPool
from service.model_versions import active_model_version
from service.prometheus import Metrics
from service.schemas import Ready, Reindex
from service.searcher import Searcher
from service.settings import Settings
from service.storage import ItemRow, Storage
from service.uploads import ReceivedUpload, receive_upload

log = logging.getLogger("service.runtime")

STATIC_DIR = Path(__file__).parent / "static"
UPKEEP_EVERY_S = 60.0  # save changed indexes and rebuild outgrown ones this often


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.static_dir = STATIC_DIR
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
        self.embedder: Embedder | None = None
        self.indexes: IndexRegistry | None = None
        self.search_executor = ThreadPoolExecutor(
            settings.search_threads, thread_name_prefix="search"
        )
        self.media_pool = MediaPool(settings.workers)
        self.ingestor = Ingestor(
            settings,
            self.storage,
            metrics,
            self.media_pool,
            self.search_executor,
            self._active,
            settings.media_dir,
        )
        self.searcher: Searcher | None = None
        self._upkeep: asyncio.Task[None] | None = None

    # -- start-up ----------------------------------------------------------------------
    def load_model_and_indexes(self) -> None:
        """The slow, synchronous part of start-up (model load, index open)."""
        handle = active_model_version(self.settings.model, self.settings.models_dir, self.storage)
        if handle is None:
            return
        embedder = Embedder.load(handle, self.settings.device)
        started = time.perf_counter()
        self.indexes = open_indexes(
            self.settings.indexes_dir,
            self.storage,
            embedder.version,
            embedder.indexed_pairs(),
            {space: embedder.dim(space) for space in embedder.model.spaces},
            self.settings.index_memory_mb * 1024 * 1024,
        )
        for event in self.indexes.active.events:
            log.info("index %s %s: %s", event.index, event.action, event.reason)
        log.info(
            "model %s on %s, indexes ready in %.1f s: %s",
            embedder.version,
            embedder.device_kind,
            time.perf_counter() - started,
            self.indexes.active.counts(),
        )
        self.embedder = embedder
        self.metrics.set_model(embedder.version)
        self.searcher = Searcher(
            self.storage,
            embedder,
            self.indexes,
            self.metrics,
            self.search_executor,
            self.settings.search_batch_ms / 1000.0,
            self.settings.search_batch_max,
            self.settings.search_threads,
            self.settings.max_text_chars,
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.load_model_and_indexes)
        self.metrics.watch_indexes(lambda: self.indexes.active.counts() if self.indexes else {})
        self.media_pool.start()
        if self.embedder is not None:
            self.media_pool.warm_up(
                self.settings.models_dir / self.embedder.version,
                self.embedder.version,
                self.settings.asr,
            )
        if self.searcher is not None:
            self.searcher.batcher.start()
            resumed = await asyncio.to_thread(self.ingestor.resume_pending)
            if resumed:
                log.info("resuming %d items left processing by the last run", resumed)
        self._upkeep = asyncio.get_running_loop().create_task(self._upkeep_loop())

    async def _upkeep_loop(self) -> None:
        while True:
            await asyncio.sleep(UPKEEP_EVERY_S)
            try:
                await asyncio.to_thread(self.upkeep)
            except Exception:  # upkeep must never take the server down
                log.exception("index upkeep failed; retrying in %.0f s", UPKEEP_EVERY_S)

    def upkeep(self) -> None:
        """Rebuild indexes that outgrew their type (logged by the indexer), save changes."""
        if self.indexes is not None:
            self.indexes.maintain()
            self.indexes.save()

    # -- shutdown ----------------------------------------------------------------------
    async def stop(self) -> None:
        await self.ingestor.drain(self.settings.shutdown_timeout_s)
        if self._upkeep is not None:
            self._upkeep.cancel()
        if self.searcher is not None:
            await self.searcher.batcher.stop()
        if self.indexes is not None:
            try:
                await asyncio.to_thread(self.indexes.save)
            except Exception:  # the next start patches or rebuilds from the database
                log.exception("could not save the indexes at shutdown")
        await asyncio.to_thread(self.media_pool.shutdown)
        self.search_executor.shutdown(wait=True)
        self.storage.close()
        log.info("stopped")

    # -- what routes use ---------------------------------------------------------------
    def _active(self) -> tuple[Embedder, IndexRegistry] | None:
        if self.embedder is None or self.indexes is None:
            return None
        return self.embedder, self.indexes

    def require_model(self) -> None:
        """NoModel before an upload is received, rather than after."""
        if self.embedder is None:
            raise errors.NoModel(
                "no model is loaded, so nothing can be embedded: set MMV_MODEL to a "
                "checkpoint folder and restart"
            )

    def require_searcher(self) -> Searcher:
        if self.searcher is None:
            raise errors.NoModel(
                "no model is loaded, so there is nothing to search with: set MMV_MODEL to a "
                "checkpoint folder and restart"
            )
        return self.searcher

    async def receive_upload(self, request: Request) -> ReceivedUpload:
        return await receive_upload(
            request,
            self.settings.tmp_dir,
            self.settings.max_upload_bytes,
            self.settings.max_transcript_kb * 1024,
        )

    def media_path(self, content_hash: str) -> Path:
        return self.ingestor.media_path(content_hash)

    def delete_item(self, item_id: str) -> ItemRow:
        row = self.storage.items.get(item_id)
        if row is None:
            raise errors.NotFound(f"no item {item_id!r}")
        self.ingestor.delete(row)
        return row

    def not_ready_reason(self) -> str | None:
        if self.embedder is None:
            return "no model is loaded (see the server log)"
        if self.indexes is None or self.searcher is None:
            return "the indexes are not open yet"
        return None

    def readiness(self) -> Ready:
        return Ready(
            model_version=self.embedder.version if self.embedder else None,
            device=self.embedder.device_kind if self.embedder else "cpu",  # type: ignore[arg-type]
            indexes=self.indexes.active.counts() if self.indexes else {},
            reindex=self._reindex(),
        )

    def _reindex(self) -> Reindex | None:
        status = self.indexes.rebuild_status() if self.indexes else None
        if not status or status.get("state") not in ("building", "catching_up"):
            return None
        return Reindex(to_version=status["to_version"], done=status["done"], total=status["total"])

    def refresh_gauges(self) -> None:
        self.metrics.items.clear()
        for status, count in self.storage.items.count_by_status().items():
            self.metrics.items.labels(status).set(count)
