"""Tenants at their own rates: every tenant's applied changes over a window, against its limit."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from admin.tenants import add_tenant
from ingest.store import create_audience
from schemas.talon import NewAudience
from tests.bench.backlog import adds, fill_many
from tests.bench.processes import Children, environment, wait_for_workers
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row
from tests.support.redis_keys import KEYS

ACCOUNT_ID = 1
LOWEST_PER_MINUTE = 60
HIGHEST_PER_MINUTE = 600
# One change at a time past the steady rate: the count a window may hold is then well defined.
BURST = 1
TOLERANCE = 0.02
# Work beyond the warm-up and the window, so no tenant runs dry even a little over its rate.
SPARE_S = 15.0


@dataclass(frozen=True)
class Tenant:
    """A tenant of the bench: its id, its audiences, its own rate (None: the default)."""

    id: int
    audiences: list[int]
    rate_per_minute: int | None


async def new_tenant(
    svc: Services,
    name: str,
    rate_per_minute: int | None = None,
    burst: int | None = None,
    audiences: int = 1,
) -> Tenant:
    """A tenant and its audiences, made as ``cohortsync-admin tenant add`` and the edge's
    ``POST /v2/audiences`` make them."""
    tenant = await add_tenant(svc.db, f"{name}.bench.talon.one", ACCOUNT_ID, rate_per_minute, burst)
    ids = []
    for n in range(audiences):
        row = await create_audience(svc.db, tenant.id, ACCOUNT_ID, NewAudience(name=f"{name}-{n}"))
        ids.append(row["id"])
    return Tenant(tenant.id, ids, rate_per_minute)


def spread(count: int, lowest: int, highest: int) -> list[int]:
    """``count`` rates evenly spread from ``lowest`` to ``highest``."""
    return [lowest + round((highest - lowest) * i / max(1, count - 1)) for i in range(count)]


async def snapshot(
    redis: aioredis.Redis, tenants: Sequence[Tenant]
) -> tuple[float, list[int], list[int]]:
    """Redis's time (s) and each tenant's applied and pending changes, all read in one step."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.time()
        for t in tenants:
            pipe.hmget(KEYS.tenant(t.id).totals, ["applied", "pending"])
        (seconds, micros), *counts = await pipe.execute()
    return (
        seconds + micros / 1e6,
        [int(applied or 0) for applied, _ in counts],
        [int(pending or 0) for _, pending in counts],
    )


async def tenant_rate_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """``rate_tenants`` tenants, each with one audience and more work than the window can take,
    at rates spread over 60-600/min (burst 1), served by ``rate_tenant_workers`` processes.

    After a warm-up, each tenant's applied counter is read at the window's start and end in one
    MULTI with Redis's clock, so the window is the time between the two reads. A tenant's limit
    over it is rate x window (plus at most its burst, 1 change).
    """
    await svc.reset()
    rates = spread(sizes.rate_tenants, LOWEST_PER_MINUTE, HIGHEST_PER_MINUTE)
    tenants = [await new_tenant(svc, f"rate-{i}", r, BURST) for i, r in enumerate(rates)]
    span_s = sizes.rate_tenant_warmup_s + sizes.rate_tenant_window_s + SPARE_S
    await fill_many(
        svc.redis_url,
        [
            (t.id, t.audiences[0], adds(math.ceil(r * span_s / 60)))
            for t, r in zip(tenants, rates, strict=True)
        ],
    )
    env = environment(svc.database_url, svc.redis_url)
    workers = [await children.worker(env) for _ in range(sizes.rate_tenant_workers)]
    await wait_for_workers(svc.redis, KEYS, workers)
    await asyncio.sleep(sizes.rate_tenant_warmup_s)
    began, before, _ = await snapshot(svc.redis, tenants)
    await asyncio.sleep(sizes.rate_tenant_window_s)
    ended, after, pending = await snapshot(svc.redis, tenants)
    for w in workers:
        if not w.running:
            raise RuntimeError(f"worker {w.pid} exited:\n{w.log()}")
    await asyncio.gather(*(w.stop() for w in workers))
    await svc.reset()
    if min(pending) == 0:
        raise RuntimeError("a tenant ran out of work inside the window")

    window_s = ended - began
    got = [b - a for a, b in zip(before, after, strict=True)]
    limits = [r * window_s / 60 for r in rates]
    deviations = [g / limit - 1 for g, limit in zip(got, limits, strict=True)]
    worst = max(range(len(rates)), key=lambda i: abs(deviations[i]))
    within = sum(abs(d) <= TOLERANCE for d in deviations)
    over = sum(g > limit + BURST for g, limit in zip(got, limits, strict=True))
    n = len(rates)
    return [
        Row(
            f"tenant rates, {n} tenants at {LOWEST_PER_MINUTE}-{HIGHEST_PER_MINUTE}/min "
            f"(burst {BURST}), {sizes.rate_tenant_workers} workers, {window_s:.0f} s",
            f"{within}/{n} within ±{TOLERANCE:.0%}, {over} over limit + burst; worst: "
            f"{got[worst]} at {rates[worst]}/min ({deviations[worst]:+.1%})",
            f"its limit, rate x window: {limits[worst]:.1f} (+ burst {BURST})",
            f"{got[worst] / limits[worst]:.3f}",
            f"each within ±{TOLERANCE:.0%}",
            # Over by more than the burst is said, not failed: a window read on finish times
            # may take in one change more when a commit before its start was late.
            within == n,
        )
    ]
