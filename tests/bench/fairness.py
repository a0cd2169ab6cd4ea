"""Fairness: a small audience arriving behind a large backlog is applied within seconds."""

from __future__ import annotations

import asyncio
import time

from tests.bench.backlog import adds, fill, outstanding
from tests.bench.processes import Children, environment, until, wait_for_workers
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, times
from tests.support.redis_keys import KEYS

REPLICAS = 2
RATE_PER_MINUTE = 6000
SMALL = 50
TARGET_S = 10.0
TIMEOUT_S = 120.0


async def fairness_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """Two replicas at 6000/min work through the large audience until arq's queue and the
    limiter's booked slots are full of it; then the small audience arrives.

    Its time is from just before its accept.lua call to the commit of its last change
    (``updated_at``, the same host clock). The baseline is what a FIFO queue would take at the
    rate measured meanwhile: everything queued ahead of it, then its own changes.
    """
    await svc.reset()
    large = await svc.new_audience("large")
    small = await svc.new_audience("small")
    await fill(svc.redis_url, large, adds(sizes.fairness_backlog, "l"))
    env = environment(svc.database_url, svc.redis_url, rate_limit_per_minute=RATE_PER_MINUTE)
    workers = [await children.worker(env) for _ in range(REPLICAS)]
    await wait_for_workers(svc.redis, KEYS, workers)
    await asyncio.sleep(sizes.fairness_warmup_s)

    ahead = await outstanding(svc.redis, KEYS)
    arrived = time.time()
    await fill(svc.redis_url, small, adds(SMALL, "s"))

    async def small_applied() -> bool:
        count = "SELECT count(*) FROM memberships WHERE audience_id = $1"
        return bool(await svc.db.fetchval(count, small) == SMALL)

    await until(small_applied, timeout_s=TIMEOUT_S)
    done = await svc.db.fetchval(
        "SELECT max(updated_at) FROM memberships WHERE audience_id = $1", small
    )
    applied, first, last = await svc.db.fetchrow(
        "SELECT count(*), min(updated_at), max(updated_at) FROM memberships"
    )
    await asyncio.gather(*(w.stop() for w in workers))
    await svc.reset()

    took_s = done.timestamp() - arrived
    per_s = (applied - 1) / (last - first).total_seconds()
    fifo_s = (ahead + SMALL) / per_s
    return [
        Row(
            f"fairness, {SMALL}-user audience behind {sizes.fairness_backlog:,} users, "
            f"{RATE_PER_MINUTE}/min, {REPLICAS} replicas",
            f"fully applied in {took_s:.1f} s",
            f"FIFO at the measured {per_s:.0f}/s: {fifo_s:,.0f} s",
            times(fifo_s / took_s),
            f"≤ {TARGET_S:.0f} s",
            took_s <= TARGET_S,
        )
    ]
