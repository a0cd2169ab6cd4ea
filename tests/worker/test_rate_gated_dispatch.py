"""Rate-gated dispatch: each change is queued due at its slot of its tenant's rate (and of the
fleet's cap), so a tenant at its limit waits on arq's queue, not in a worker; tenants with work
take turns."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from core.scripts.dispatch import HORIZON_S, UNLIMITED, Rate, reschedule
from schemas import keys
from tests.support.redis_keys import KEYS, scripts
from tests.support.worker import accept, new_audience

QUANTUM = 5
WATERMARK = 10**6


async def due_times(redis: aioredis.Redis) -> list[tuple[int, int]]:
    """(audience, due ms) of every queued job, by due time."""
    found = await redis.zrange(KEYS.queue, 0, -1, withscores=True)
    return [(keys.parse_job_id(j.decode())[0], int(s)) for j, s in found]


async def test_jobs_are_due_at_their_tenants_slots(db: Any, redis: aioredis.Redis) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", f"p{i}") for i in range(100)])
    before_ms = time.time() * 1000

    # 600/min: a slot every 100 ms; burst 1: none at once.
    result = await scripts(redis).dispatch(WATERMARK, 100, QUANTUM, lambda _: Rate(600, 1))

    due = [d for _, d in await due_times(redis)]
    # Only the slots within the horizon are given out: the rest wait in the backlog.
    assert result.created == len(due) == int(HORIZON_S * 10) + 1
    assert await redis.llen(KEYS.backlog(a)) == 100 - result.created  # type: ignore[misc]
    assert before_ms - 5 <= due[0] <= time.time() * 1000 + 5
    gaps = {b - a for a, b in itertools.pairwise(due)}
    assert gaps <= {99, 100, 101}, gaps
    # The tenant waits for its next slot, past the horizon it was served up to.
    score = await redis.zscore(KEYS.tenants_due, "1")
    assert score is not None
    assert score >= due[-1] + 99


async def test_a_tenant_at_its_limit_holds_no_ready_job_back(
    db: Any, redis: aioredis.Redis
) -> None:
    slow, fast = await new_audience(db, "slow"), await new_audience(db, "fast")
    await accept(redis, slow, [("add", f"s{i}") for i in range(1000)], tenant=2)
    await accept(redis, fast, [("add", f"f{i}") for i in range(10)], tenant=3)
    rates = {2: Rate(60, 1), 3: UNLIMITED}

    dispatch = scripts(redis).dispatch
    for _ in range(3):
        await dispatch(WATERMARK, 100, QUANTUM, rates.__getitem__)

    now_ms = time.time() * 1000
    due = await due_times(redis)
    # The slow tenant got the slots its rate has within the horizon (one a second), the fast
    # one all of its changes, due now.
    assert Counter(a for a, _ in due) == Counter({slow: int(HORIZON_S) + 1, fast: 10})
    assert all(d <= now_ms for a, d in due if a == fast)
    assert sorted(d for a, d in due if a == slow)[-1] >= now_ms + 900
    # The fast tenant is drained and off the tenants with work; the slow one waits its slot.
    assert await redis.zrange(KEYS.tenants_due, 0, -1) == [b"2"]


async def test_tenants_with_work_share_the_room_equally(db: Any, redis: aioredis.Redis) -> None:
    audiences = {t: await new_audience(db, f"t{t}") for t in (2, 3, 4)}
    for t, a in audiences.items():
        await accept(redis, a, [("add", f"p{i}") for i in range(500)], tenant=t)

    dispatch = scripts(redis).dispatch
    for _ in range(10):
        await dispatch(WATERMARK, 30, QUANTUM)

    shares = Counter(a for a, _ in await due_times(redis))
    assert set(shares.values()) == {100}, shares


async def test_the_fleet_cap_spaces_every_tenants_jobs(db: Any, redis: aioredis.Redis) -> None:
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    await accept(redis, a, [("add", f"a{i}") for i in range(100)], tenant=2)
    await accept(redis, b, [("add", f"b{i}") for i in range(100)], tenant=3)

    # No tenant limit, a fleet cap of 600/min: one slot every 100 ms, over both tenants.
    dispatch = scripts(redis).dispatch
    for _ in range(3):
        await dispatch(WATERMARK, 100, QUANTUM, lambda _: UNLIMITED, Rate(600, 1))

    due = await due_times(redis)
    times = [d for _, d in due]
    assert len(due) == int(HORIZON_S * 10) + 1
    assert {y - x for x, y in itertools.pairwise(times)} <= {99, 100, 101}
    # Shared equally while the cap binds.
    counts = Counter(a for a, _ in due)
    assert abs(counts[a] - counts[b]) <= QUANTUM, counts


async def test_a_raised_rate_spaces_the_very_next_slot(db: Any, redis: aioredis.Redis) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", f"p{i}") for i in range(500)], tenant=2)
    dispatch = scripts(redis).dispatch
    # A short horizon, so the first rate books less than the test's own duration.
    horizon = 0.5

    first = await dispatch(WATERMARK, 500, QUANTUM, lambda _: Rate(60, 1), horizon_s=horizon)
    assert first.created == 1
    # Its next slot is a second away at 60/min: not due within the horizon.
    skipped = await dispatch(WATERMARK, 500, QUANTUM, lambda _: Rate(6000, 1), horizon_s=horizon)
    assert skipped.created == 0
    # The workers' rate refresh reschedules a tenant whose rate changed (worker/rates.py).
    await reschedule(redis, KEYS, [2])
    second = await dispatch(WATERMARK, 500, QUANTUM, lambda _: Rate(6000, 1), horizon_s=horizon)

    # 10 ms apart from the slot given at the old rate, up to the horizon.
    assert 40 <= second.created <= 51
    times = [d for _, d in await due_times(redis)]
    assert {y - x for x, y in itertools.pairwise(times[1:])} <= {9, 10, 11}


async def test_a_burst_is_due_at_once_then_the_rate_spaces_the_rest(
    db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", f"p{i}") for i in range(30)], tenant=2)
    now_ms = time.time() * 1000

    # 600/min with a burst of 10: 9 at once (one slot of the burst is kept back for commits
    # landing a little late, COMMIT_JITTER_US), then one every 100 ms.
    await scripts(redis).dispatch(WATERMARK, 100, QUANTUM, lambda _: Rate(600, 10))

    due = sorted(d for _, d in await due_times(redis))
    at_once = [d for d in due if d <= now_ms + 20]
    assert len(at_once) == 9, due
    later = due[len(at_once) :]
    assert {y - x for x, y in itertools.pairwise(later)} <= {99, 100, 101}
    # The burst does not add to the rate: over the horizon, the burst plus one per interval.
    assert len(due) <= 10 + int(HORIZON_S * 10) + 1
