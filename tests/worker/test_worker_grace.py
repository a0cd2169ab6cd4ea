"""Shutdown grace: running jobs get ``shutdown_grace_s`` to finish; the rest go back, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from schemas.settings import Settings
from tests.support.redis_keys import KEYS
from tests.support.status import wait_until
from tests.support.worker import accept, memberships, new_audience
from worker.app import create_worker, stop_worker
from worker.drain import run_until_drained


async def _members(db: Any, audience: int) -> int:
    return sum(member for member, _ in (await memberships(db, audience)).values())


@pytest.mark.parametrize("grace_s", [0.0, 3.0])
async def test_running_jobs_get_the_grace_period(
    settings: Settings, db: Any, redis: aioredis.Redis, grace_s: float
) -> None:
    audience = await new_audience(db)
    await accept(redis, audience, [("add", f"p{i}") for i in range(200)])
    fast = settings.with_changes(rate_limit_per_minute=0, worker_metrics_port=0)
    async with db.acquire() as blocker:
        # Postgres holds every write back: the jobs the worker takes stay running.
        lock = blocker.transaction()
        await lock.start()
        await blocker.execute("LOCK TABLE memberships IN EXCLUSIVE MODE")
        worker = create_worker(fast, handle_signals=False)
        run = asyncio.create_task(worker.async_run())

        async def busy() -> bool:
            return worker.functions_running >= 50

        await wait_until(busy, "jobs running")
        running = worker.functions_running
        # Postgres comes back half a second into the stop: within the grace period, or after
        # the jobs were handed back (only the batch already sent to Postgres then commits, as
        # the applier closes).
        asyncio.get_running_loop().call_later(0.5, lambda: asyncio.ensure_future(lock.rollback()))
        await stop_worker(worker, run, grace_s=grace_s)
    during_stop = await _members(db, audience)
    # No job is left leased: each finished, or is back on arq's queue for any replica.
    assert await redis.zcard(KEYS.leases) == 0
    queued = await redis.zcard(KEYS.queue)
    if grace_s:
        assert during_stop >= running
    else:
        assert queued >= running - during_stop

    await run_until_drained(fast, timeout_s=60)
    assert await _members(db, audience) == 200
