"""The micro-batcher: queries that arrive together are answered by one batch."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.errors import NotFound, ServiceError
from service.prometheus import Metrics
from service.search_batcher import SearchBatcher
from service.searcher import Answer, Query


class Recorder:
    """A batch function that records the batches it was given (the real one embeds and
    searches; what is tested here is only how queries are grouped)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def __call__(self, batch: list[Query]) -> list[Answer | ServiceError]:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        self.batches.append([q.text or "" for q in batch])
        return [
            NotFound(f"no {q.text}")
            if q.text == "missing"
            else Answer([(json.dumps({"q": q.text}), 1.0)], "vat", "v1")
            for q in batch
        ]


async def run_batcher(recorder: Recorder, texts: list[str], window_s: float, max_batch: int,
                      stagger_s: float = 0.0) -> list[Answer | BaseException]:  # fmt: skip
    executor = ThreadPoolExecutor(1, thread_name_prefix="search")
    batcher = SearchBatcher(recorder, executor, Metrics(), window_s=window_s, max_batch=max_batch)
    batcher.start()

    async def one(i: int, text: str) -> Answer:
        await asyncio.sleep(i * stagger_s)
        return await batcher.submit(Query("audio", 10, "vat", text=text))

    try:
        return await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)),
                                    return_exceptions=True)  # fmt: skip
    finally:
        await batcher.stop()
        executor.shutdown()


def test_queries_arriving_together_share_one_batch() -> None:
    rec = Recorder()
    answers = asyncio.run(run_batcher(rec, [f"q{i}" for i in range(20)], 0.01, 64))
    assert rec.batches == [[f"q{i}" for i in range(20)]]
    assert [json.loads(a.hits[0][0])["q"] for a in answers] == [f"q{i}" for i in range(20)]
    assert rec.threads == {"search_0"}  # the work ran off the event loop


def test_without_a_window_a_burst_still_shares_one_batch() -> None:
    rec = Recorder()
    asyncio.run(run_batcher(rec, [f"q{i}" for i in range(32)], 0.0, 64))
    assert rec.batches == [[f"q{i}" for i in range(32)]]


def test_a_full_batch_goes_at_once_and_the_rest_follows() -> None:
    rec = Recorder()
    asyncio.run(run_batcher(rec, [f"q{i}" for i in range(10)], 0.5, 4))
    assert [len(b) for b in rec.batches] == [4, 4, 2]


def test_queries_queue_while_a_batch_runs() -> None:
    rec = Recorder(delay_s=0.05)
    texts = [f"q{i}" for i in range(12)]
    asyncio.run(run_batcher(rec, texts, 0.0, 64, stagger_s=0.01))
    assert sum(len(b) for b in rec.batches) == 12
    assert len(rec.batches) < 12  # later queries waited for the running batch and grouped


def test_one_failing_query_does_not_fail_its_companions() -> None:
    rec = Recorder()
    answers = asyncio.run(run_batcher(rec, ["a", "missing", "b"], 0.01, 64))
    assert isinstance(answers[1], NotFound)
    assert isinstance(answers[0], Answer) and isinstance(answers[2], Answer)


def test_submit_before_start_is_refused() -> None:
    batcher = SearchBatcher(Recorder(), ThreadPoolExecutor(1), Metrics())
    with pytest.raises(ServiceError):
        asyncio.run(batcher.submit(Query("audio", 10, "vat", text="x")))
