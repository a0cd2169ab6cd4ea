"""claim.lua and renew.lua: leases on running jobs, claimed for many ids at once."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from schemas import keys
from worker.leases import LEASE_S, Leases

QUEUE = "claim-test:queue"


async def test_claims_only_due_queued_unleased_jobs(redis: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(QUEUE, {"due": now_ms - 10, "running": now_ms - 10, "later": now_ms + 60_000})
    await redis.zadd(keys.LEASES, {"running": now_ms + 60_000})
    leases = Leases(redis, QUEUE)
    claimed = await leases.claim(["due", "running", "later", "gone"], room=5)
    assert [(c.job_id, c.score) for c in claimed] == [("due", now_ms - 10)]
    lease_ms = await redis.zscore(keys.LEASES, "due")
    assert lease_ms is not None
    assert now_ms < lease_ms <= time.time() * 1000 + LEASE_S * 1000
    # A second replica reading the same ids gets nothing: the lease is exclusive.
    assert await leases.claim(["due", "running", "later", "gone"], room=5) == []


async def test_a_lapsed_lease_is_claimable_and_held_ids_do_not_count_against_room(
    redis: aioredis.Redis,
) -> None:
    now_ms = int(time.time() * 1000)
    held = {f"held{i}": now_ms - 100 + i for i in range(50)}
    await redis.zadd(QUEUE, {**held, "dead-holder": now_ms - 1, "free": now_ms})
    await redis.zadd(keys.LEASES, dict.fromkeys(held, now_ms + 60000))
    # A replica that died: its lease lapsed a moment ago, nobody renewed it.
    await redis.zadd(keys.LEASES, {"dead-holder": now_ms - 1})
    claimed = await Leases(redis, QUEUE).claim([*held, "dead-holder", "free"], room=2)
    assert [c.job_id for c in claimed] == ["dead-holder", "free"]


async def test_renew_extends_only_leases_still_held(redis: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(keys.LEASES, {"mine": now_ms + 1000})
    assert await Leases(redis, QUEUE).renew(["mine", "finished"]) == 1
    renewed = await redis.zscore(keys.LEASES, "mine")
    assert renewed is not None
    assert renewed > now_ms + 1000
    assert await redis.zscore(keys.LEASES, "finished") is None
