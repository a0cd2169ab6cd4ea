"""Shutdown grace: running jobs get ``shutdown_grace_s`` to finish; the rest go back, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from schemas.settings import Settings
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
    # 10 changes a second: most jobs are running, waiting for their slot, when the stop comes.
    slow = settings.with_changes(rate_limit_per_minute=600, rate_burst=1, worker_metrics_port=0)
    worker = create_worker(slow, handle_signals=False)
    run = asyncio.create_task(worker.async_run())

    async def busy() -> bool:
        return worker.functions_running >= 50 and await _members(db, audience) >= 1

    await wait_until(busy, "jobs running")
    before = await _members(db, audience)
    await stop_worker(worker, run, grace_s=grace_s)
    during_stop = await _members(db, audience) - before
    if grace_s:
        # Jobs whose slots came within the grace period finished (≈ 10 a second).
        assert during_stop >= 10
    else:
        # Handed back at once; at most a batch that was already committing lands.
        assert during_stop <= 5
    assert await _members(db, audience) < 200

    await run_until_drained(settings.with_changes(rate_limit_per_minute=0), timeout_s=60)
    assert await _members(db, audience) == 200
