"""claim.lua: arq's start rule (queued, due, not running elsewhere) for many ids at once."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix

from schemas.lua import source

QUEUE = "claim-test:queue"


async def test_claims_only_due_queued_idle_jobs(redis: aioredis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    await redis.zadd(QUEUE, {"due": now_ms - 10, "running": now_ms - 10, "later": now_ms + 60_000})
    await redis.set(in_progress_key_prefix + "running", b"1")
    claim = redis.register_script(source("claim"))
    args: list[str | int] = [in_progress_key_prefix, 5000, "due", "running", "later", "gone"]
    claimed = await claim(keys=[QUEUE], args=args)
    assert claimed[0::2] == [b"due"]
    assert int(float(claimed[1])) == now_ms - 10
    ttl = await redis.pttl(in_progress_key_prefix + "due")
    assert 0 < ttl <= 5000
    # A second worker reading the same ids gets nothing: the claim is exclusive.
    assert await claim(keys=[QUEUE], args=args) == []
