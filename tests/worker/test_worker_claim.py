"""claim.lua and renew.lua: a running job leaves arq's queue for a lease, claimed for many jobs
in one round trip at a cost that does not grow with the jobs other replicas run."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from core.scripts import Scripts
from core.scripts.leases import LEASE_S, Leases
from schemas import keys
from schemas.keys import Keys

KEYS = Keys("claim-test")
QUEUE = KEYS.queue


def leases_on(redis: aioredis.Redis) -> Leases:
    return Scripts(redis, KEYS).leases


async def test_claims_due_jobs_oldest_first_and_moves_them_to_leases(
    redis: aioredis.Redis,
) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(QUEUE, {"old": now_ms - 20, "due": now_ms - 10, "later": now_ms + 60_000})
    leases = leases_on(redis)
    claimed = await leases.claim(room=1)
    assert [(c.job_id, c.score) for c in claimed] == [("old", now_ms - 20)]
    assert [(c.job_id, c.score) for c in await leases.claim(room=5)] == [("due", now_ms - 10)]
    # Held jobs are off the queue: the next claim finds only what is not due yet.
    assert await leases.claim(room=5) == []
    assert await redis.zrange(QUEUE, 0, -1) == [b"later"]
    for job in ("old", "due"):
        lapses_ms = await redis.zscore(KEYS.leases, job)
        assert lapses_ms is not None
        assert now_ms < lapses_ms <= time.time() * 1000 + LEASE_S * 1000


async def test_a_lapsed_lease_goes_back_to_the_head_of_the_queue(redis: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(QUEUE, {"queued": now_ms - 5})
    # One job held by a live replica, one by a replica that died a lease ago.
    await redis.zadd(KEYS.leases, {"held": now_ms + 60_000, "dead-holder": now_ms - 1})
    claimed = await leases_on(redis).claim(room=1)
    assert [c.job_id for c in claimed] == ["dead-holder"]
    assert await redis.zrange(QUEUE, 0, -1) == [b"queued"]
    assert await redis.zscore(KEYS.leases, "held") == now_ms + 60_000


async def test_renew_extends_only_leases_still_held(redis: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(KEYS.leases, {"mine": now_ms + 1000})
    assert await leases_on(redis).renew(["mine", "finished"]) == 1
    renewed = await redis.zscore(KEYS.leases, "mine")
    assert renewed is not None
    assert renewed > now_ms + 1000
    assert await redis.zscore(KEYS.leases, "finished") is None


async def test_retry_requeues_only_a_job_that_still_exists(redis: aioredis.Redis) -> None:
    leases = leases_on(redis)
    await redis.zadd(KEYS.leases, {"cs:1:1": 1, "cs:1:2": 1})
    await redis.set(keys.ARQ_JOB_PREFIX + "cs:1:1", b"job")
    assert await leases.retry("cs:1:1", due_ms=1234) is True
    # Finished by another run meanwhile (its key is gone): no ghost on the queue.
    assert await leases.retry("cs:1:2", due_ms=1234) is False
    assert await redis.zrange(QUEUE, 0, -1, withscores=True) == [(b"cs:1:1", 1234.0)]
    assert await redis.zcard(KEYS.leases) == 0
