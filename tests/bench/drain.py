"""No tenant holds another back: beside one tenant's huge backlog, small tenants drain at their own
rates, and a new tenant's cohort lands within seconds."""

from __future__ import annotations

import asyncio
import time

from tests.bench.backlog import adds, fill, fill_many, outstanding
from tests.bench.processes import Children, environment, until, wait_for_workers
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, times
from tests.bench.tenants import new_tenant, spread
from tests.support.redis_keys import KEYS

WORKERS = 4
BIG_PER_MINUTE = 1000
SMALL_LOWEST_PER_MINUTE = 300
SMALL_HIGHEST_PER_MINUTE = 600
BURST = 1
DRAIN_TOLERANCE = 0.02
COHORT = 50
# The workers' default rate, which the new tenant (no rate of its own) gets from every replica
# at once: its own slots take 0.5 s for the 50, so the time says how long the others held it.
DEFAULT_PER_MINUTE = 6000
LAND_TARGET_S = 2.0
LAND_TIMEOUT_S = 60.0

COUNT = "SELECT count(*) FROM memberships WHERE audience_id = ANY($1::bigint[])"


async def drain_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """A big tenant's backlog at 1000/min and ``drain_small_tenants`` tenants at 300-600/min
    (all burst 1), ``drain_small_changes`` changes each, accepted in one go once four workers
    run the big one's. A small tenant's drain time runs from just before that acceptance to the
    ``updated_at`` of its last row; its baseline is its changes at its rate.

    Half-way through the fastest small tenant's drain, a new tenant (at the workers' default
    rate) is made and its 50-user cohort accepted: its time runs from just before its
    ``accept.lua`` call to the ``updated_at`` of its last row, beside what a FIFO queue would take
    at the rate the fleet applied meanwhile.
    """
    await svc.reset()
    big = await new_tenant(svc, "big", BIG_PER_MINUTE, BURST)
    rates = spread(sizes.drain_small_tenants, SMALL_LOWEST_PER_MINUTE, SMALL_HIGHEST_PER_MINUTE)
    small = [await new_tenant(svc, f"small-{i}", r, BURST) for i, r in enumerate(rates)]
    small_audiences = [t.audiences[0] for t in small]
    await fill(svc.redis_url, big.audiences[0], adds(sizes.drain_big_backlog, "b"), big.id)
    env = environment(svc.database_url, svc.redis_url, rate_limit_per_minute=DEFAULT_PER_MINUTE)
    workers = [await children.worker(env) for _ in range(WORKERS)]
    await wait_for_workers(svc.redis, KEYS, workers)

    accepted = time.time()
    changes = sizes.drain_small_changes
    await fill_many(svc.redis_url, [(t.id, t.audiences[0], adds(changes, "s")) for t in small])
    expected = [changes * 60 / r for r in rates]

    await asyncio.sleep(max(0.0, accepted + min(expected) / 2 - time.time()))
    newcomer = await new_tenant(svc, "new")
    cohort = newcomer.audiences[0]
    ahead = await outstanding(svc.redis, KEYS)
    arrived = time.time()
    await fill(svc.redis_url, cohort, adds(COHORT, "n"), newcomer.id)

    async def landed() -> bool:
        return bool(await svc.db.fetchval(COUNT, [cohort]) == COHORT)

    await until(landed, timeout_s=LAND_TIMEOUT_S)
    landed_at = await svc.db.fetchval(
        "SELECT max(updated_at) FROM memberships WHERE audience_id = $1", cohort
    )
    # What the fleet applied from the small tenants' arrival to the cohort's.
    applied_meanwhile = await svc.db.fetchval(
        "SELECT count(*) FROM memberships"
        " WHERE updated_at >= to_timestamp($1) AND updated_at < to_timestamp($2)",
        accepted,
        arrived,
    )

    async def drained() -> bool:
        return bool(await svc.db.fetchval(COUNT, small_audiences) == changes * len(small))

    await until(drained, timeout_s=max(expected) * 1.5 + 30, interval_s=0.5)
    for w in workers:
        if not w.running:
            raise RuntimeError(f"worker {w.pid} exited:\n{w.log()}")
    last = {
        r["audience_id"]: r["last"]
        for r in await svc.db.fetch(
            "SELECT audience_id, max(updated_at) AS last FROM memberships"
            " WHERE audience_id = ANY($1::bigint[]) GROUP BY audience_id",
            small_audiences,
        )
    }
    big_applied, big_first, big_last = await svc.db.fetchrow(
        "SELECT count(*), min(updated_at), max(updated_at) FROM memberships WHERE audience_id = $1",
        big.audiences[0],
    )
    await asyncio.gather(*(w.stop() for w in workers))
    await svc.reset()

    drains = [last[a].timestamp() - accepted for a in small_audiences]
    deviations = [d / e - 1 for d, e in zip(drains, expected, strict=True)]
    worst = max(range(len(rates)), key=lambda i: abs(deviations[i]))
    big_per_minute = (big_applied - 1) * 60 / (big_last - big_first).total_seconds()
    took_s = landed_at.timestamp() - arrived
    per_s = applied_meanwhile / (arrived - accepted)
    fifo_s = (ahead + COHORT) / per_s
    n = len(rates)
    beside = (
        f"beside {sizes.drain_big_backlog:,} at {BIG_PER_MINUTE}/min (burst {BURST}), "
        f"{WORKERS} workers"
    )
    return [
        Row(
            f"tenant drain, {n} tenants x {changes} changes at {SMALL_LOWEST_PER_MINUTE}-"
            f"{SMALL_HIGHEST_PER_MINUTE}/min {beside}",
            f"worst: {drains[worst]:.1f} s at {rates[worst]}/min ({deviations[worst]:+.1%}); "
            f"big tenant meanwhile {big_per_minute:.0f}/min",
            f"its changes / its rate: {expected[worst]:.1f} s",
            f"{drains[worst] / expected[worst]:.3f}",
            f"each within ±{DRAIN_TOLERANCE:.0%}",
            all(abs(d) <= DRAIN_TOLERANCE for d in deviations),
        ),
        Row(
            f"new tenant's {COHORT}-user cohort mid-drain, {ahead:,} changes queued ahead",
            f"fully applied in {took_s:.2f} s",
            f"FIFO at the measured {per_s:.0f}/s: {fifo_s:,.0f} s",
            times(fifo_s / took_s),
            f"≤ {LAND_TARGET_S:.0f} s",
            took_s <= LAND_TARGET_S,
        ),
    ]
