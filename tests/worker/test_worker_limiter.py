"""The shared rate limiter: coalesced reservations, runtime rate changes, one rate for all."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from worker.limiter import Limiter

from tests.support.redis_keys import KEYS, scripts


async def test_concurrent_acquisitions_share_one_round_trip(redis: aioredis.Redis) -> None:
    limiter = Limiter(scripts(redis).limiter, rate_per_minute=600_000, burst=0)
    await limiter.acquire()  # learns the rate in force
    await asyncio.gather(*(limiter.acquire() for _ in range(50)))
    assert limiter.calls == 2
    await limiter.close()


async def test_lifted_limit_is_not_asked_for_every_job(redis: aioredis.Redis) -> None:
    limiter = Limiter(scripts(redis).limiter, rate_per_minute=1000, burst=0)
    await redis.hset(KEYS.config, "rate_per_minute", "0")  # type: ignore[misc]
    for _ in range(50):
        await limiter.acquire()
    assert (limiter.calls, limiter.rate_per_minute) == (1, 0)
    await limiter.close()


async def test_slots_are_spaced_by_the_rate(redis: aioredis.Redis) -> None:
    limiter = Limiter(scripts(redis).limiter, rate_per_minute=60_000, burst=0)
    first = await limiter.reserve(5)
    second = await limiter.reserve(1)
    assert first.interval_s == second.interval_s == 0.001
    # The second reservation queues behind the five slots of the first (less the time elapsed).
    assert second.first_s > first.first_s + 3 * first.interval_s
    await limiter.close()


async def test_config_hash_changes_the_rate_at_runtime(redis: aioredis.Redis) -> None:
    limiter = Limiter(scripts(redis).limiter, rate_per_minute=600, burst=5)
    assert (await limiter.reserve(1)).rate_per_minute == 600
    await redis.hset(KEYS.config, "rate_per_minute", "6000")  # type: ignore[misc]
    grant = await limiter.reserve(1)
    assert (grant.rate_per_minute, grant.interval_s) == (6000, 0.01)
    await redis.hset(KEYS.config, "rate_per_minute", "0")  # type: ignore[misc]
    assert tuple(await limiter.reserve(100)) == (0.0, 0.0, 0)
    assert limiter.rate_per_minute == 0
    await limiter.close()


async def test_waiters_get_consecutive_slots(redis: aioredis.Redis) -> None:
    # 6000/min: 20 waiters need about 190 ms after the first slot; sleeping, not failing.
    limiter = Limiter(scripts(redis).limiter, rate_per_minute=6000, burst=0)
    loop = asyncio.get_running_loop()
    done: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        done.append(loop.time())

    await asyncio.gather(*(one() for _ in range(20)))
    assert len(done) == 20
    # Every slot is at least one interval after the previous one (less timer slack).
    gaps = [b - a for a, b in zip(sorted(done), sorted(done)[1:], strict=False)]
    assert min(gaps) > 0.005
    await limiter.close()
