"""dispatch.lua on its own: the jobs it writes, and deficit round-robin across audiences."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas import keys
from schemas.jobs import Change, ChangeJob, deserialize_job
from tests.support.redis_keys import KEYS, scripts
from tests.support.worker import accept, new_audience

QUANTUM = 10
# Far above anything these tests queue: only the batch bounds a dispatch.
WATERMARK = 10**6


async def queued_by_audience(redis: aioredis.Redis) -> Counter[int]:
    ids = await redis.zrange(KEYS.queue, 0, -1)
    return Counter(keys.parse_job_id(i.decode())[0] for i in ids)


async def test_jobs_are_arqs_payload_for_each_change(db: Any, redis: aioredis.Redis) -> None:
    a = await new_audience(db)
    versions = await accept(redis, a, [("add", "p:1:x"), ("delete", "é2")])

    result = await scripts(redis).dispatch(WATERMARK, batch=10, quantum=QUANTUM)

    assert result.created == 2
    ids = sorted(i.decode() for i in await redis.zrange(KEYS.queue, 0, -1))
    assert ids == sorted(KEYS.job_id(a, v) for v in versions)
    expected = [Change(a, "p:1:x", True, versions[0]), Change(a, "é2", False, versions[1])]
    for change in expected:
        raw = await redis.get(KEYS.job(KEYS.job_id(a, change.version)))
        # Strictly arq's job fields and nothing else, each of its type.
        job = msgspec.msgpack.decode(raw, type=ChangeJob)
        assert job == ChangeJob(1, keys.APPLY_FUNCTION, (change,), change.version // 1000)
        assert deserialize_job(raw)["a"] == [change]


async def test_every_audience_gets_a_whole_quantum_per_round(
    db: Any, redis: aioredis.Redis
) -> None:
    """Dispatches of every size, most cutting a turn short: after each one, no audience is
    more than one quantum ahead of another, and each full round leaves them all equal."""
    audiences = [await new_audience(db, f"a{n}") for n in range(3)]
    for a in audiences:
        await accept(redis, a, [("add", f"p{i}") for i in range(200)])
    sizes = random.Random(7)
    dispatched = rounds = 0
    while dispatched < 450:
        result = await scripts(redis).dispatch(WATERMARK, sizes.randint(1, 25), QUANTUM)
        dispatched += result.created
        counts = await queued_by_audience(redis)
        shares = [counts[a] for a in audiences]
        assert max(shares) - min(shares) <= QUANTUM, shares
        if dispatched % (QUANTUM * len(audiences)) == 0:
            assert len(set(shares)) == 1, shares
            rounds += 1
    # The sizes make several dispatches end exactly on a round.
    assert rounds >= 2


async def test_a_cut_turn_goes_on_at_the_next_dispatch(db: Any, redis: aioredis.Redis) -> None:
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    await accept(redis, a, [("add", f"p{i}") for i in range(30)])
    await accept(redis, b, [("add", f"q{i}") for i in range(30)])
    dispatch = scripts(redis).dispatch

    await dispatch(WATERMARK, 4, QUANTUM)
    assert await redis.get(KEYS.tenant(1).dispatch_credit) == f"{a}:6".encode()
    await dispatch(WATERMARK, 8, QUANTUM)

    # a finished its turn of 10 (4 + 6), then b took the 2 left of that dispatch.
    assert await queued_by_audience(redis) == Counter({a: 10, b: 2})
    assert await redis.get(KEYS.tenant(1).dispatch_credit) == f"{b}:8".encode()


async def test_credit_of_an_audience_no_longer_at_the_head_is_ignored(
    db: Any, redis: aioredis.Redis
) -> None:
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    await accept(redis, a, [("add", f"p{i}") for i in range(30)])
    await accept(redis, b, [("add", f"q{i}") for i in range(30)])
    await redis.set(KEYS.tenant(1).dispatch_credit, f"{b}:3")

    await scripts(redis).dispatch(WATERMARK, 10, QUANTUM)

    assert await queued_by_audience(redis) == Counter({a: 10})


async def test_drained_audiences_leave_no_credit_or_turn_behind(
    db: Any, redis: aioredis.Redis
) -> None:
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    await accept(redis, a, [("add", f"p{i}") for i in range(7)])
    await accept(redis, b, [("add", f"q{i}") for i in range(13)])
    dispatch = scripts(redis).dispatch
    while (await dispatch(WATERMARK, 3, QUANTUM)).backlog_total:
        pass

    assert await queued_by_audience(redis) == Counter({a: 7, b: 13})
    assert await redis.llen(KEYS.tenant(1).active_list) == 0  # type: ignore[misc]
    assert not await redis.exists(KEYS.tenant(1).dispatch_credit, KEYS.dispatch_turn)
