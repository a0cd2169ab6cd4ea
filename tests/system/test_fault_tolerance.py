"""Workers killed with SIGKILL mid-drain lose no change and apply none over a newer one."""

from __future__ import annotations

import random
import signal
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from schemas import keys
from schemas.settings import Settings
from tests.bench.processes import children, environment, until, wait_for_workers
from tests.support.redis_keys import KEYS
from tests.support.worker import accept, memberships, new_audience, stats
from worker.drain import is_drained

PROFILES = 400
CHANGES = 3000
KILLS = 2


def sent_changes(seed: int) -> list[tuple[keys.Action, str]]:
    """Adds and deletes over a few hundred profiles, each changed several times: only the
    order they were sent in says which one counts."""
    rng = random.Random(seed)
    actions: list[keys.Action] = ["add", "delete"]
    return [(rng.choice(actions), f"r{rng.randrange(PROFILES)}") for _ in range(CHANGES)]


async def finished(redis: aioredis.Redis, audience: int) -> int:
    """Jobs of the audience that ran to the end: applied, or found stale."""
    counted = await stats(redis, audience)
    return counted.get("applied", 0) + counted.get("dropped", 0)


async def finished_at_least(redis: aioredis.Redis, audience: int, n: int) -> bool:
    return await finished(redis, audience) >= n


async def test_sigkilled_workers_lose_no_change(
    settings: Settings, db: Any, redis: aioredis.Redis, tmp_path: Path
) -> None:
    audience = await new_audience(db)
    changes = sent_changes(seed=3)
    versions: list[int] = []
    for first in range(0, CHANGES, 500):
        versions += await accept(redis, audience, changes[first : first + 500])
    # Last writer wins: the newest version of each profile, as the sender meant it.
    expected: dict[str, tuple[bool, int]] = {}
    for (action, profile), version in zip(changes, versions, strict=True):
        expected[profile] = (action == "add", version)

    # 200 changes a second: a drain of about 15 s, so each kill lands mid-drain. Default job
    # timeout and lease: a dead worker's jobs come back when their 10 s lease lapses (with arq's
    # own in-progress keys that took job_timeout_s + 10 s = 310 s, which a shortened timeout hid).
    env = environment(settings.database_url, settings.redis_url, rate_limit_per_minute=12_000)
    async with children(tmp_path) as group:
        for _ in range(KILLS):
            victim = await group.worker(env)
            await wait_for_workers(redis, KEYS, [victim])
            target = await finished(redis, audience) + 150
            await until(partial(finished_at_least, redis, audience, target), timeout_s=30)
            victim.kill()
            assert await victim.process.wait() == -signal.SIGKILL
        assert not await is_drained(redis, KEYS)

        survivor = await group.worker(env)

        async def drained() -> bool:
            return await is_drained(redis, KEYS)

        # What is left after the kills takes ~5 s at the rate, plus at most one lease.
        await until(drained, timeout_s=40, interval_s=0.2)
        assert await survivor.stop() == 0, survivor.log()

    assert await memberships(db, audience) == expected
    assert await redis.llen(KEYS.dead_letters) == 0  # type: ignore[misc]
    for prefix in (keys.ARQ_JOB_PREFIX, keys.ARQ_IN_PROGRESS_PREFIX, keys.ARQ_RETRY_PREFIX):
        assert await redis.keys(prefix + "*") == []
    # Each change was dispatched once; a job a killed worker had not finished ran again, and
    # found its change committed already or still to do (the state above is exact).
    counted = await stats(redis, audience)
    assert counted["accepted"] == counted["dispatched"] == CHANGES
    # Counted once per job in the step that finished it, whichever run that was.
    assert counted.get("applied", 0) + counted.get("dropped", 0) == CHANGES
