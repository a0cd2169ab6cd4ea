"""Limiter accuracy: four replicas share one limit; what Postgres stored says how well."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from schemas.settings import Settings
from tests.bench.backlog import adds, fill
from tests.bench.processes import Children, environment, until, wait_for_workers
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row
from tests.support.redis_keys import KEYS

REPLICAS = 4
RATE_PER_MINUTE = 6000
TOLERANCE = 0.01

# The most rows stored in any one-second window: every window starting at a stored row.
BUSIEST_SECOND = """
SELECT coalesce(max(n), 0) FROM (
    SELECT count(*) OVER (
        ORDER BY updated_at RANGE BETWEEN CURRENT ROW AND INTERVAL '999999 microseconds' FOLLOWING
    ) AS n
    FROM memberships
) windows
"""


async def rate_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """Four replicas at 6000/min over a backlog larger than the window can take.

    Each applied change is one row whose ``updated_at`` is the time its statement ran, a few
    milliseconds after its limiter slot, so Postgres itself counts what was applied when.
    """
    await svc.reset()
    settings = Settings()
    burst = settings.rate_burst
    audience = await svc.new_audience("rate")
    env = environment(svc.database_url, svc.redis_url, rate_limit_per_minute=RATE_PER_MINUTE)
    workers = [await children.worker(env) for _ in range(REPLICAS)]
    await wait_for_workers(svc.redis, KEYS, workers)
    # Queued only once every replica runs, so all four compete from the first change on.
    per_s = RATE_PER_MINUTE / 60
    await fill(svc.redis_url, audience, adds(int(per_s * (sizes.rate_window_s + 15))))

    async def started() -> bool:
        return bool(await svc.db.fetchval("SELECT count(*) FROM memberships"))

    await until(started, timeout_s=30)
    first = await svc.db.fetchval("SELECT min(updated_at) FROM memberships")
    # Applied in [first, first + window): wait until the window and any straggler are stored.
    await asyncio.sleep(sizes.rate_window_s + 1)
    for w in workers:
        if not w.running:
            raise RuntimeError(f"worker {w.pid} exited:\n{w.log()}")
    await asyncio.gather(*(w.stop() for w in workers))
    applied = await svc.db.fetchval(
        "SELECT count(*) FROM memberships WHERE updated_at < $1",
        first + timedelta(seconds=sizes.rate_window_s),
    )
    busiest = await svc.db.fetchval(BUSIEST_SECOND)
    await svc.reset()

    expected = per_s * sizes.rate_window_s
    ratio = applied / expected
    bound = per_s + burst
    window = f"{REPLICAS} replicas, {RATE_PER_MINUTE}/min, {sizes.rate_window_s:.0f} s"
    return [
        Row(
            f"limiter accuracy, applied / expected, {window}",
            f"{applied:,} applied",
            f"{expected:,.0f} expected",
            f"{ratio:.4f}",
            f"within ±{TOLERANCE:.0%}",
            abs(ratio - 1) <= TOLERANCE,
        ),
        Row(
            f"limiter, busiest 1-second window, {window}",
            f"{busiest} applied",
            f"limit/60 + burst = {bound:.0f}",
            f"{busiest / bound:.2f}",
            "≤ 1.00",
            busiest <= bound,
        ),
    ]
