"""Run one worker in-process until every queued change is applied (tests, the local runner)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from core import redisconn
from schemas.keys import Keys
from schemas.settings import Settings
from worker.app import create_worker, stop_worker
from worker.state import STATE_KEY

CHECK_INTERVAL_S = 0.02


async def is_drained(redis: Redis, keys: Keys) -> bool:
    """True when no backlog entry, queued, deferred or running arq job is left."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.backlog_total)
        pipe.zcard(keys.tenants_due)
        pipe.zcard(keys.queue)
        # Running jobs are held under a lease, off arq's queue, until they finish.
        pipe.zcard(keys.leases)
        total, active, queued, running = await pipe.execute()
    return int(total or 0) <= 0 and active == 0 and queued == 0 and running == 0


async def run_until_drained(settings: Settings, timeout_s: float = 60, **overrides: Any) -> None:
    """Start a worker, wait until everything queued is applied, stop it.

    Raises ``TimeoutError`` if that takes longer than ``timeout_s``, and what the worker raised
    if it stopped by itself (e.g. Postgres unreachable at start-up).
    """
    worker = create_worker(settings, handle_signals=False, **overrides)
    run = asyncio.create_task(worker.async_run())
    redis: Redis = redisconn.connect(settings.redis_url)
    try:
        async with asyncio.timeout(timeout_s):
            # Started first, so an empty queue does not stop a worker halfway through start-up.
            while STATE_KEY not in worker.ctx or not await is_drained(redis, worker.keys):
                if run.done():
                    run.result()
                    raise RuntimeError("the worker stopped before the queue was drained")
                await asyncio.sleep(CHECK_INTERVAL_S)
    finally:
        await redis.aclose()
        await stop_worker(worker, run)
