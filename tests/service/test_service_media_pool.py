"""The media worker pool: a child that dies fails only the task that killed it."""

from __future__ import annotations

import asyncio

import pool_tasks

from service.media_worker import MediaPool, WorkerCrashed


def test_a_crash_fails_only_its_own_task_and_the_pool_keeps_serving() -> None:
    async def scenario() -> tuple[list[object], int]:
        pool = MediaPool(2)
        pool.start()
        try:
            # Three tasks in flight when one kills its process: all three lose their
            # process (concurrent.futures breaks the whole pool), only one is at fault.
            results = await asyncio.gather(
                pool.run(pool_tasks.answers, 1, 1.5),
                pool.run(pool_tasks.dies, 0.5),
                pool.run(pool_tasks.answers, 2, 1.5),
                return_exceptions=True,
            )
            after = await pool.run(pool_tasks.answers, 3, 0.0)
            return results, after
        finally:
            pool.shutdown()

    results, after = asyncio.run(scenario())
    assert results[0] == 1 and results[2] == 2, results
    assert isinstance(results[1], WorkerCrashed)
    assert after == 3
