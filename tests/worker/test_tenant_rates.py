"""Tenants at their own rates in a running worker: one at its limit holds no worker back from
another's changes, and a rate set at runtime reaches the worker within about a second."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from admin.tenants import add_tenant
from schemas.settings import Settings
from tests.support.status import running_worker, wait_until
from tests.support.worker import accept, memberships


async def tenant_audience(db: Any, tenant: int, name: str) -> int:
    audience: int = await db.fetchval(
        "INSERT INTO audiences (account_id, name, tenant_id) VALUES (1, $1, $2) RETURNING id",
        name,
        tenant,
    )
    return audience


async def test_a_tenant_at_its_limit_holds_no_worker_back(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    # A worker with room for few jobs at once: a design where jobs waited for their slot inside
    # the worker would fill it with the slow tenant's jobs and starve the other.
    slow = await add_tenant(db, "slow.talon.one", 1, rate_per_minute=60, burst=1)
    fast = await add_tenant(db, "fast.talon.one", 2, rate_per_minute=0)
    a = await tenant_audience(db, slow.id, "big cohort")
    b = await tenant_audience(db, fast.id, "small cohort")
    await accept(redis, a, [("add", f"s{i}") for i in range(5000)], tenant=slow.id)
    narrow = settings.with_changes(worker_max_jobs=4, rate_limit_per_minute=1000)
    async with running_worker(narrow, redis):
        # The slow tenant's slots are taken and queued ahead; now the fast tenant's cohort.
        await wait_until(lambda: _applied(db, a, 1), "the slow tenant's first change")
        started = time.monotonic()
        await accept(redis, b, [("add", f"f{i}") for i in range(200)], tenant=fast.id)
        await wait_until(lambda: _applied(db, b, 200), "the fast tenant's 200 changes")
        took_s = time.monotonic() - started
        slow_done = len(await memberships(db, a))
    # The unlimited tenant's 200 went through 4 job slots while the slow one got no more than
    # its rate: about one a second (its burst of 1, then 60/min).
    assert slow_done <= 2 + took_s * 1.1


async def test_a_rate_set_at_runtime_reaches_the_worker(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    tenant = await add_tenant(db, "acme.talon.one", 1, rate_per_minute=60, burst=1)
    a = await tenant_audience(db, tenant.id, "cohort")
    await accept(redis, a, [("add", f"p{i}") for i in range(300)], tenant=tenant.id)
    async with running_worker(settings, redis):
        await wait_until(lambda: _applied(db, a, 1), "the first change")
        await db.execute("UPDATE tenants SET rate_per_minute = 6000 WHERE id = $1", tenant.id)
        # 6000/min: the rest in about 3 s once the workers read the new rate (each second).
        await wait_until(lambda: _applied(db, a, 300), "all 300 at the new rate", timeout_s=15)


async def _applied(db: Any, audience: int, n: int) -> bool:
    return len(await memberships(db, audience)) >= n
