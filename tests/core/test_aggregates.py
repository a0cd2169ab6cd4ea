"""The queue's aggregates (``Keys.totals``, the audiences by pending, the idle audiences) stay the
exact sum of the per-audience counters through every script that changes them, are built once
for counters written before they existed, and idle or deleted audiences' keys are reclaimed."""

from __future__ import annotations

import random

import asyncpg
import msgspec
import redis.asyncio as aioredis

from admin.deadletters import replay
from admin.redis_upgrade import upgrade_redis
from core.scripts import Scripts
from core.scripts.backlogs import aggregate_keys
from core.scripts.leases import Outcome
from schemas.jobs import DeadLetter
from schemas.keys import IDLE_RECLAIM_S, STATS_IN_TOTALS, TOTALS_FIELDS, parse_job_id
from schemas.settings import Settings
from schemas.status import AudienceCounts
from tests.support.redis_keys import KEYS, scripts
from tests.support.status import running_worker, wait_until
from tests.support.worker import accept, clear, new_audience

Audiences = dict[int, dict[str, int]]


async def per_audience(redis: aioredis.Redis) -> Audiences:
    """Every stats hash in the namespace, read key by key (what the aggregates save)."""
    found: Audiences = {}
    async for name in redis.scan_iter(match=KEYS.stats("") + "*", count=1000):
        raw = await redis.hgetall(name)  # type: ignore[misc]
        found[int(name.decode().rsplit(":", 1)[1])] = {k.decode(): int(v) for k, v in raw.items()}
    return found


async def assert_aggregates_exact(redis: aioredis.Redis) -> None:
    audiences = await per_audience(redis)
    totals = {k.decode(): int(v) for k, v in (await redis.hgetall(KEYS.totals)).items()}  # type: ignore[misc]
    for field in TOTALS_FIELDS:
        summed = sum(a.get(field, 0) for a in audiences.values())
        # What forgotten audiences (deleted, or idle a day) counted stays in the totals.
        assert totals.get(field, 0) == summed + totals.get(f"reclaimed_{field}", 0), field
    assert all(a.get(STATS_IN_TOTALS) == 1 for a in audiences.values())
    pending: dict[int, int] = {}
    for audience, counts in audiences.items():
        backlog = await redis.llen(KEYS.backlog(audience))  # type: ignore[misc]
        row = AudienceCounts(
            audience,
            backlog,
            counts.get("accepted", 0),
            counts.get("applied", 0),
            counts.get("dropped", 0),
            counts.get("dead", 0),
        )
        pending[audience] = row.pending
    ranked = {
        int(a): int(s)
        for a, s in await redis.zrange(KEYS.audiences_pending, 0, -1, withscores=True)
    }
    assert ranked == {a: p for a, p in pending.items() if p > 0}
    assert totals.get("pending", 0) == sum(pending.values())
    idle = {int(a) for a in await redis.zrange(KEYS.tenant(1).audiences_idle, 0, -1)}
    assert idle == {a for a, p in pending.items() if p == 0}
    # Every audience here is the default tenant's: its aggregates are the fleet's.
    tenant = KEYS.tenant(1)
    own = {k.decode(): int(v) for k, v in (await redis.hgetall(tenant.totals)).items()}  # type: ignore[misc]
    assert own == {k: v for k, v in totals.items() if k != "tenants_split"}
    assert await redis.zrange(tenant.audiences_pending, 0, -1, withscores=True) == (
        await redis.zrange(KEYS.audiences_pending, 0, -1, withscores=True)
    )
    assert await redis.zscore(KEYS.tenants_pending, "1") == (totals.get("pending") or None)


async def finish_some(own: Scripts, rng: random.Random, most: int) -> None:
    """Claim up to ``most`` jobs and finish each with a random outcome, as workers do."""
    for claimed in await own.leases.claim(most):
        audience, version = parse_job_id(claimed.job_id)
        outcome: Outcome = rng.choice(["applied", "applied", "applied", "dropped", "dead"])
        letter = b""
        if outcome == "dead":
            change = [audience, f"p{version % 50}", True, version]
            letter = msgspec.json.encode(DeadLetter(claimed.job_id, change, "x", 1))
        await own.leases.finish(claimed.job_id, audience, outcome, letter)


async def test_random_operations_keep_the_aggregates_exact(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    rng = random.Random(7)
    own = scripts(redis)
    audiences = [await new_audience(db, f"a{i}") for i in range(8)]
    replayed = 0
    for step in range(120):
        audience = rng.choice(audiences)
        roll = rng.random()
        if roll < 0.4:
            n = rng.randint(1, 12)
            await accept(redis, audience, [("add", f"p{rng.randint(0, 50)}") for _ in range(n)])
        elif roll < 0.65:
            await own.dispatch(watermark=40, batch=rng.randint(1, 30), quantum=rng.randint(1, 5))
        elif roll < 0.85:
            await finish_some(own, rng, rng.randint(1, 10))
        elif roll < 0.92:
            await clear(db, redis, audience)
        elif roll < 0.96:
            replayed += (await replay(own, audience))[0]
        else:
            # A deleted audience's keys go once nothing of it is pending; a new one replaces it.
            await clear(db, redis, audience, delete=True)
            audiences[audiences.index(audience)] = await new_audience(db, f"b{step}")
        await assert_aggregates_exact(redis)
    # Drain: every pending change ends applied, dropped or dead, and the totals still agree.
    for _ in range(200):
        await own.dispatch(watermark=1000, batch=200, quantum=10)
        await finish_some(own, rng, 1000)
        if not await redis.zcard(KEYS.audiences_pending):
            break
    await assert_aggregates_exact(redis)
    totals = await redis.hgetall(KEYS.totals)  # type: ignore[misc]
    assert int(totals.get(b"pending", 0)) == 0
    # Every kind of step happened: dead letters replayed, deleted audiences forgotten.
    assert replayed > 0
    assert int(totals[b"reclaimed_accepted"]) > 0
    assert int(totals[b"dead"]) > 0


async def test_counters_written_before_the_aggregates_join_them_once(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    # An existing deployment: stats hashes and backlogs, no aggregates.
    a, b, c = [await new_audience(db, name) for name in "abc"]
    await accept(redis, a, [("add", "x")])
    await accept(redis, b, [("add", "y"), ("add", "z")])
    await redis.delete(*aggregate_keys(KEYS, 1))
    for audience in (a, b):
        await redis.hdel(KEYS.stats(audience), STATS_IN_TOTALS)  # type: ignore[misc]
    await redis.hset(KEYS.stats(c), mapping={"accepted": 5, "applied": 5})  # type: ignore[misc]

    first = await upgrade_redis(scripts(redis))
    assert first.aggregated == 3
    await assert_aggregates_exact(redis)
    assert int(await redis.hget(KEYS.totals, "accepted")) == 8  # type: ignore[misc]
    # Run again (a Kubernetes migrate Job after every rollout): nothing counts twice.
    assert (await upgrade_redis(scripts(redis))).aggregated == 0
    await assert_aggregates_exact(redis)
    assert int(await redis.hget(KEYS.totals, "accepted")) == 8  # type: ignore[misc]


async def test_a_script_touching_an_old_hash_first_counts_it_once(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    # Edges of the new version run before cohortsync-admin migrate does.
    a = await new_audience(db)
    await redis.hset(KEYS.stats(a), mapping={"accepted": 3, "applied": 1})  # type: ignore[misc]
    await accept(redis, a, [("add", "x")])
    await upgrade_redis(scripts(redis))
    await assert_aggregates_exact(redis)
    assert int(await redis.hget(KEYS.totals, "accepted")) == 4  # type: ignore[misc]


async def test_idle_audiences_are_forgotten_after_a_day_and_the_totals_keep_them(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    own = scripts(redis)
    idle, busy = await new_audience(db, "idle"), await new_audience(db, "busy")
    await accept(redis, idle, [("add", "x")])
    await clear(db, redis, idle)
    await accept(redis, busy, [("add", "y")])
    assert await redis.zscore(KEYS.tenant(1).audiences_idle, str(idle)) is not None
    # At the default, an audience idle for a moment keeps everything.
    assert await own.reclaim(IDLE_RECLAIM_S, 100) == 0
    assert await redis.exists(KEYS.stats(idle))
    before = await redis.hgetall(KEYS.totals)  # type: ignore[misc]

    # Idle long enough (here: a day ago), it goes; the busy one keeps everything.
    await redis.zadd(KEYS.tenant(1).audiences_idle, {str(idle): 1})
    assert await own.reclaim(IDLE_RECLAIM_S, 100) == 1
    assert not await redis.exists(KEYS.stats(idle))
    assert await redis.hget(KEYS.versions, str(idle)) is None  # type: ignore[misc]
    assert await redis.hget(KEYS.cleared, str(idle)) is None  # type: ignore[misc]
    assert await redis.zscore(KEYS.tenant(1).audiences_idle, str(idle)) is None
    assert await redis.exists(KEYS.stats(busy))
    after = await redis.hgetall(KEYS.totals)  # type: ignore[misc]
    assert {k: v for k, v in after.items() if not k.startswith(b"reclaimed_")} == before
    assert after[b"reclaimed_accepted"] == after[b"reclaimed_dropped"] == b"1"
    await assert_aggregates_exact(redis)
    # It takes changes again, counted afresh, with versions after its old ones.
    await accept(redis, idle, [("add", "z")])
    assert await redis.zscore(KEYS.audiences_pending, str(idle)) == 1


async def test_one_that_got_work_after_it_was_read_keeps_its_keys(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", "x")])
    await clear(db, redis, a)
    await redis.zadd(KEYS.tenant(1).audiences_idle, {str(a): 1})
    # Its backlog fills between the read of the idle set and the script (declared keys).
    await redis.rpush(KEYS.backlog(a), "a1:late")  # type: ignore[misc]
    assert await scripts(redis).reclaim(IDLE_RECLAIM_S, 100) == 0
    assert await redis.exists(KEYS.stats(a))


async def test_a_clear_leaves_the_active_list_to_the_dispatcher(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    await accept(redis, a, [("add", "x")])
    await accept(redis, b, [("add", "y")])
    await clear(db, redis, a)
    # No search of the active list on the request path: the id stays until its turn.
    active = KEYS.tenant(1).active_list
    assert await redis.lrange(active, 0, -1) == [str(a).encode(), str(b).encode()]  # type: ignore[misc]
    await accept(redis, a, [("add", "z")])
    assert await redis.lrange(active, 0, -1) == [str(a).encode(), str(b).encode()]  # type: ignore[misc]
    await clear(db, redis, a)
    done = await scripts(redis).dispatch(watermark=100, batch=10, quantum=5)
    assert (done.created, done.dropped) == (1, 0)
    assert await redis.lrange(KEYS.tenant(1).active_list, 0, -1) == []  # type: ignore[misc]
    assert await redis.smembers(KEYS.tenant(1).active_set) == set()  # type: ignore[misc]


async def test_a_worker_replica_forgets_audiences_idle_for_a_day(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    for audience in (a, b):
        await accept(redis, audience, [("add", "x")])
        await clear(db, redis, audience)
    # a went idle a day ago, b just now.
    await redis.zadd(KEYS.tenant(1).audiences_idle, {str(a): 1})

    async def forgotten() -> bool:
        return not await redis.exists(KEYS.stats(a))

    async with running_worker(settings, redis):
        await wait_until(forgotten, "the worker to forget the idle audience")
    assert await redis.exists(KEYS.stats(b))
    await assert_aggregates_exact(redis)
