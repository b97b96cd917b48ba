"""The micro-batcher: queries that arrive together are answered by one batch.

The batcher takes every query waiting when it runs (up to `max_batch`) and hands them to
one call of the batch function in a search thread (service/searcher.py answers them
with ONE text-encoder call and ONE FAISS search per (space, target)). At most
`concurrency` batches run at once; while they run, new queries queue up and form the
next batch, so batches grow with load. Requests parsed in the same turn of the event
loop are all queued before the batcher runs, so a burst shares one batch with no
waiting; `window_s` > 0 adds a wait for later companions (it cost latency and bought no
throughput in bench/service.py, so the default is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from service.errors import ServiceError
from service.prometheus import Metrics

if TYPE_CHECKING:
    from service.searcher import Answer, Query

log = logging.getLogger("service.search")


class SearchBatcher:
    """Collects queries on the event loop; runs each batch in the search executor."""

    def __init__(
        self,
        run_batch: Callable[[list[Query]], list[Answer | ServiceError]],
        executor: Executor,
        metrics: Metrics,
        window_s: float = 0.0,
        max_batch: int = 64,
        concurrency: int = 1,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self._metrics = metrics
        self.window_s = window_s
        self.max_batch = max_batch
        self.concurrency = concurrency  # batches in flight at once (executor threads)
        self._queue: list[Query] = []
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self._full: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="search-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:
            await asyncio.wait(list(self._running), timeout=30)
        for q in self._queue:
            if q.future is not None and not q.future.done():
                q.future.set_exception(ServiceError("the server is shutting down"))
        self._queue.clear()

    async def submit(self, query: Query) -> Answer:
        if self._task is None or self._wakeup is None or self._full is None:
            raise ServiceError("search is not running")
        query.future = asyncio.get_running_loop().create_future()
        query.enqueued = time.perf_counter()
        self._queue.append(query)
        self._wakeup.set()
        if len(self._queue) >= self.max_batch:
            self._full.set()
        return await query.future

    async def _loop(self) -> None:
        assert self._wakeup is not None and self._full is not None
        assert self._slots is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if len(self._queue) < self.max_batch and self.window_s > 0:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.window_s)
            # While every slot is busy, queries keep queueing: the next batch grows.
            await self._slots.acquire()
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._answer(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[Query]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        queued = self._metrics.child(self._metrics.search_stage, "queue")
        for q in batch:
            queued.observe(started - q.enqueued)
        self._metrics.search_batch.observe(len(batch))
        try:
            answers = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:  # a bug in the batch code: fail these queries, keep serving
            log.exception("search batch failed")
            answers = [exc] * len(batch)  # type: ignore[list-item]
        finally:
            self._slots.release()
        for q, answer in zip(batch, answers, strict=True):
            assert q.future is not None
            if q.future.done():  # the client went away
                continue
            if isinstance(answer, BaseException):
                q.future.set_exception(answer)
            else:
                q.future.set_result(answer)
