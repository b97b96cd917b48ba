"""Searches from several threads while another adds and deletes, against a brute-force
reference: every answer must equal the exact answer over one state the index really had."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from indexer import ArraySource, IndexPolicy, IndexSet
from indexer.locking import ReadWriteLock
from indexer.synthetic import ClusteredSphere

Reference = Callable[..., tuple[np.ndarray, np.ndarray]]
K = 5


def test_readers_share_the_lock_and_writers_wait_for_them() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first_in, release = threading.Event(), threading.Event()

    def reader(name: str) -> None:
        with lock.read():
            order.append(f"{name} in")
            first_in.set()
            release.wait(5)
        order.append(f"{name} out")

    def writer() -> None:
        with lock.write():
            order.append("writer in")

    r1 = threading.Thread(target=reader, args=("r1",))
    r1.start()
    first_in.wait(5)
    w = threading.Thread(target=writer)
    w.start()
    time.sleep(0.05)
    assert order == ["r1 in"], "the writer must wait for the reader"
    late = threading.Thread(target=reader, args=("r2",))
    late.start()
    time.sleep(0.05)
    assert "r2 in" not in order, "a reader arriving while a writer waits queues behind it"
    release.set()
    for thread in (r1, w, late):
        thread.join(5)
    assert order.index("writer in") > order.index("r1 out")
    assert order.index("r2 in") > order.index("writer in")


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_interleaved_adds_deletes_and_searches_match_a_reference(
    tmp_path: Path, sphere: ClusteredSphere, reference: Reference, kind: str
) -> None:
    rng = np.random.default_rng(11)
    pool = sphere.sample(2400, seed=12)
    pool_ids = np.arange(2400, dtype=np.int64) * 3 + 17
    source = ArraySource()
    source.put("vat", "audio", pool_ids[:1500], pool[:1500])
    # ivf: exhaustive nprobe so its answers are exact too and can be checked the same way
    policy = (
        IndexPolicy(compact_max=64, tuning_queries=100)
        if kind == "flat"
        else IndexPolicy(
            exact_max_floats=0,
            factory="IVF16,Flat",
            compact_max=64,
            tuning_queries=100,
            recall_target=1.0,
        )
    )
    index_set = IndexSet.open(
        tmp_path, "v1", {"vat": ["audio"]}, {"vat": 32}, source, policy, save=False
    )

    live = set(pool_ids[:1500].tolist())
    states: list[frozenset[int]] = [frozenset(live)]  # states[i]: after i writes
    completed = 0
    unused = list(pool_ids[1500:])
    queries = sphere.sample(8, seed=13)
    observations: list[tuple[int, int, int, np.ndarray]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        nonlocal completed
        try:
            for step in range(120):
                if step % 2 == 0 and unused:
                    batch = np.array([unused.pop() for _ in range(min(8, len(unused)))])
                    rows = (batch - 17) // 3
                    index_set.add("vat", "audio", batch, pool[rows])
                    live.update(batch.tolist())
                else:
                    batch = rng.choice(np.array(sorted(live)), size=8, replace=False)
                    index_set.remove(batch)
                    live.difference_update(batch.tolist())
                states.append(frozenset(live))
                completed += 1
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            done.set()

    def searcher() -> None:
        try:
            while not done.is_set():
                q = int(rng.integers(0, len(queries)))
                before = completed
                ids = index_set.search("vat", "audio", queries[q : q + 1], K).ids[0]
                observations.append((q, before, completed, ids))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert completed == 120 and len(observations) > 50

    cache: dict[tuple[int, int], tuple[int, ...]] = {}

    def exact(q: int, state: int) -> tuple[int, ...]:
        if (q, state) not in cache:
            ids = np.array(sorted(states[state]), dtype=np.int64)
            found = reference(ids, pool[(ids - 17) // 3], queries[q : q + 1], K)[1][0]
            cache[(q, state)] = tuple(found.tolist())
        return cache[(q, state)]

    for q, before, after, ids in observations:
        # the writer may have been mid-write at either end of the search
        candidates = range(before, min(after + 1, len(states) - 1) + 1)
        assert any(tuple(ids.tolist()) == exact(q, s) for s in candidates), (q, before, after)

    final = np.array(sorted(states[-1]), dtype=np.int64)
    assert index_set.count("vat", "audio") == len(final)
    all_q = index_set.search("vat", "audio", queries, K).ids
    assert (all_q == reference(final, pool[(final - 17) // 3], queries, K)[1]).all()
    assert index_set.stats()["indexes"]["vat/audio"]["compactions"] >= 1
