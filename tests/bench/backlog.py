"""Filling per-audience backlogs the way the edge does (accept.lua), fast, and reading progress."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from core.scripts.backlogs import accept_call, parse_accept
from ingest import redisclient
from schemas.keys import DEFAULT_TENANT, Keys
from schemas.lua import source
from tests.support.redis_keys import KEYS

# accept.lua takes at most this many entries per audience in one call (the edge's request size).
CHUNK = 1000
# Calls sent in one pipeline.
PIPELINE = 20


def profile_id(n: int, prefix: str = "p") -> str:
    """A 15-character profile id, the size the memory target is stated for."""
    return f"{prefix}{n:0{15 - len(prefix)}d}"


def adds(count: int, prefix: str = "p", start: int = 0) -> list[str]:
    """accept.lua entries (action code + id) adding ``count`` distinct profiles."""
    return ["a" + profile_id(n, prefix) for n in range(start, start + count)]


async def fill(
    redis_url: str, audience_id: int, entries: Sequence[str], tenant: int = DEFAULT_TENANT
) -> None:
    """Append entries to an audience's backlog, ``CHUNK`` per accept.lua call as the edge would."""
    await fill_many(redis_url, [(tenant, audience_id, entries)])


async def fill_many(redis_url: str, groups: Sequence[tuple[int, int, Sequence[str]]]) -> None:
    """``fill`` for many (tenant, audience, entries) at once: their calls share pipelines, in
    the order given."""
    # The edge's client: hiredis packs a thousand-argument call in one C call.
    client = redisclient.connect(redis_url)
    try:
        # Pipelined, which the scripts registry does not do: its call builder, on a pipeline.
        script = client.register_script(source("accept"))
        calls = [
            accept_call(KEYS, {audience_id: entries[i : i + CHUNK]}, 2**62, tenant=tenant)
            for tenant, audience_id, entries in groups
            for i in range(0, len(entries), CHUNK)
        ]
        for first in range(0, len(calls), PIPELINE):
            async with client.pipeline(transaction=False) as pipe:
                for script_keys, args in calls[first : first + PIPELINE]:
                    await script(keys=script_keys, args=args, client=pipe)
                replies = await pipe.execute()
            if any(parse_accept(r).outcome != "accepted" for r in replies):
                raise RuntimeError(f"accept.lua refused entries: {replies}")
    finally:
        await client.aclose()


async def outstanding(redis: aioredis.Redis, keys: Keys) -> int:
    """Changes not applied yet: in a backlog, on arq's queue, or running under a lease (a
    plain arq worker keeps a running job on its queue; ours moves it to ``Keys.leases``)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.backlog_total)
        pipe.zcard(keys.queue)
        pipe.zcard(keys.leases)
        total, queued, running = await pipe.execute()
    return int(total or 0) + int(queued) + int(running)
