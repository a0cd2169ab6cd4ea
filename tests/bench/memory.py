"""Redis memory per queued user: a backlog entry beside an arq job."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from arq.connections import RedisSettings, create_pool

from schemas import keys
from schemas.settings import Settings
from tests.bench.backlog import adds, fill, profile_id
from tests.bench.processes import Children
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, times
from tests.support.redis_keys import KEYS

TARGET_BYTES = 50
ENQUEUERS = 16


async def _used_memory(redis: aioredis.Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def memory_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """INFO used_memory before and after queueing: everything the queued users cost, the
    backlog list and any bookkeeping around it. One audience, as a large cohort is."""
    await svc.reset()
    audience = await svc.new_audience("memory")
    before = await _used_memory(svc.redis)
    await fill(svc.redis_url, audience, adds(sizes.memory_users))
    ours = (await _used_memory(svc.redis) - before) / sizes.memory_users
    queued = await svc.redis.llen(KEYS.backlog(audience))  # type: ignore[misc]
    if queued != sizes.memory_users:
        raise RuntimeError(f"{queued} queued, not {sizes.memory_users}")

    await svc.redis.flushall()
    settings = Settings()
    before = await _used_memory(svc.redis)
    pool = await create_pool(
        RedisSettings.from_dsn(svc.redis_url), default_queue_name=settings.queue_name
    )
    try:
        next_job = iter(range(sizes.memory_arq_jobs))

        async def enqueue() -> None:
            for n in next_job:
                await pool.enqueue_job(keys.APPLY_FUNCTION, audience, profile_id(n), True, n + 1)

        await asyncio.gather(*(enqueue() for _ in range(ENQUEUERS)))
    finally:
        await pool.aclose()
    arq = (await _used_memory(svc.redis) - before) / sizes.memory_arq_jobs
    await svc.reset()
    return [
        Row(
            f"Redis bytes per queued user, {sizes.memory_users:,} queued, 15-character ids",
            f"{ours:.1f} B",
            f"arq enqueue_job, {sizes.memory_arq_jobs:,} jobs: {arq:.0f} B",
            times(arq / ours),
            f"≤ {TARGET_BYTES} B",
            ours <= TARGET_BYTES,
        )
    ]
