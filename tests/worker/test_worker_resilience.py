"""The worker's poll loop: claims no more than it has room for, and a stop turned into a timeout
still stops it (tests/system/test_redis_out_of_memory.py: it survives a Redis refusing writes)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from arq.worker import func

from schemas.keys import Keys
from schemas.settings import Settings
from worker.app import ChangeWorker, redis_pool
from worker.errors import raise_if_cancelled

KEYS = Keys("resilience-test")
QUEUE = KEYS.queue


class HoldingWorker(ChangeWorker):
    """Starts the jobs it claims and holds them, so the test sees exactly what was claimed."""

    async def run_claimed(self, job_id: str, score: int) -> None:
        await asyncio.sleep(3600)


async def noop(ctx: dict[str, Any]) -> None:
    """A function for arq's worker to know; HoldingWorker never calls it."""


async def test_claims_fill_the_room_and_never_more(
    settings: Settings, redis: aioredis.Redis
) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(QUEUE, {f"free{i}": now_ms - 50 + i for i in range(10)})
    # Another replica runs 1,000 jobs: they are off the queue, so they cost this claim nothing.
    await redis.zadd(KEYS.leases, {f"held{i}": now_ms + 60_000 for i in range(1000)})
    pool = redis_pool(settings)
    worker = HoldingWorker(
        functions=[func(noop, name="noop")],
        redis_pool=pool,
        keys=KEYS,
        queue_name=QUEUE,
        max_jobs=4,
        handle_signals=False,
    )
    try:
        await worker._claim_and_start()
        assert sorted(worker.unfinished()) == ["free0", "free1", "free2", "free3"]
        assert await redis.zcard(QUEUE) == 6
        assert await redis.zcard(KEYS.leases) == 1004
    finally:
        runners = list(worker.unfinished().values())
        for task in runners:
            task.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        await pool.aclose()


async def test_a_stop_turned_into_a_timeout_still_stops_the_loop() -> None:
    # redis-py can turn a cancellation during a read into TimeoutError (an OSError); a loop that
    # waits out Redis errors swallowed its own stop that way and a worker never exited.
    async def waits_out_errors() -> None:
        while True:
            try:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError as e:
                    raise TimeoutError("Timeout reading from socket") from e
            except OSError as e:
                raise_if_cancelled(e)

    task = asyncio.create_task(waits_out_errors())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done
    assert task.cancelled()
