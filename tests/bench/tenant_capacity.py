"""A worker's capacity does not shrink with tenants; beside it, saq's and arq's no-op workers."""

from __future__ import annotations

import math

from tests.bench.backlog import adds, fill_many
from tests.bench.capacity import OURS_GUESS_PER_S, arq_noop_rate, drain_rate
from tests.bench.capacity import TARGET_RATIO as NOOP_TARGET_RATIO
from tests.bench.processes import Children, environment
from tests.bench.saq_worker import saq_noop_rate
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, rate, times
from tests.bench.tenants import new_tenant

TARGET_RATIO = 0.8


async def _ours(
    svc: Services, children: Children, tenants: int, audiences: int, sizes: Sizes
) -> float:
    """One worker process, limits lifted (no tenant has a rate of its own, the default is 0),
    over ``tenants`` tenants with ``audiences`` audiences each."""
    await svc.reset()
    made = [await new_tenant(svc, f"capacity-{i}", audiences=audiences) for i in range(tenants)]
    groups = [(t.id, a) for t in made for a in t.audiences]
    total = OURS_GUESS_PER_S * (sizes.capacity_warmup_s + sizes.capacity_s + 2)
    each = math.ceil(total / len(groups))
    await fill_many(svc.redis_url, [(t, a, adds(each)) for t, a in groups])
    env = environment(svc.database_url, svc.redis_url, rate_limit_per_minute=0)
    worker = await children.worker(env)
    per_s, done = await drain_rate(svc, [worker], sizes)
    await worker.stop()
    stored = await svc.db.fetchval("SELECT count(*) FROM memberships")
    if stored < done:
        raise RuntimeError(f"{done} changes counted as done but only {stored} rows stored")
    return per_s


async def tenant_capacity_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """The same changes over the same audiences, one per tenant or all of one tenant, drained
    by one worker process with the limits lifted (best of two runs each); then saq's and arq's
    no-op workers, one process each, over jobs queued beforehand. Done = what ``drain_rate``
    counts."""
    n = sizes.capacity_tenants
    # Each configuration's best of two runs, in the order 1, n, n, 1: the shared machine's load
    # coming or going meanwhile weighs on both alike.
    shapes = [(1, n), (n, 1), (n, 1), (1, n)]
    runs = [await _ours(svc, children, tenants, audiences, sizes) for tenants, audiences in shapes]
    one = max(runs[0], runs[3])
    many = max(runs[1], runs[2])
    arq = await arq_noop_rate(svc, children, 1, sizes)
    saq = await saq_noop_rate(svc, children, sizes)
    await svc.reset()
    ratio = many / one
    return [
        Row(
            f"worker capacity, {n:,} tenants (1 audience each) vs 1 tenant ({n:,} audiences), "
            "limits lifted, 1 process",
            rate(many, "changes"),
            f"1 tenant: {rate(one, 'changes')}",
            times(ratio),
            f"≥ {TARGET_RATIO}x",
            ratio >= TARGET_RATIO,
        ),
        Row(
            f"worker capacity, {n:,} tenants, limits lifted, 1 process, vs saq's and arq's "
            "no-op workers",
            rate(many, "changes"),
            f"saq no-op: {rate(saq, 'jobs')}; arq no-op: {rate(arq, 'jobs')} "
            f"(saq/arq {saq / arq:.2f})",
            times(many / saq),
            f"≥ {NOOP_TARGET_RATIO}x saq",
            many / saq >= NOOP_TARGET_RATIO,
        ),
    ]
