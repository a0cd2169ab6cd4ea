"""What the worker tests do to Redis and Postgres the way the edge would: accept, clear, read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from schemas import keys
from schemas.lua import source

Changes = Sequence[tuple[keys.Action, str]]


async def new_audience(db: Any, name: str = "cohort") -> int:
    audience_id: int = await db.fetchval(
        "INSERT INTO audiences (account_id, name) VALUES (1, $1) RETURNING id", name
    )
    return audience_id


async def accept(redis: aioredis.Redis, audience_id: int, changes: Changes) -> list[int]:
    """Append changes to an audience's backlog with accept.lua; returns their versions."""
    script = redis.register_script(source("accept"))
    before = await redis.llen(keys.backlog_key(audience_id))  # type: ignore[misc]
    args: list[str | int] = [10**12, 1, audience_id, len(changes)]
    args += [keys.ACTION_CODE[action] + profile for action, profile in changes]
    key_args = [keys.VERSIONS, keys.ACTIVE_LIST, keys.ACTIVE_SET, keys.BACKLOG_TOTAL]
    key_args += [keys.backlog_key(audience_id), keys.stats_key(audience_id)]
    assert await script(keys=key_args, args=args) == [1, len(changes)]
    entries = await redis.lrange(keys.backlog_key(audience_id), before, -1)  # type: ignore[misc]
    return [keys.decode_entry(e.decode())[2] for e in entries]


async def clear(db: Any, redis: aioredis.Redis, audience_id: int, *, delete: bool = False) -> int:
    """What the edge does for DELETE .../memberships (or the audience): returns the version."""
    version = int(
        await redis.register_script(source("next_version"))(
            keys=[keys.VERSIONS], args=[audience_id]
        )
    )
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE audiences SET cleared_version = $2,"
            " deleted_at = CASE WHEN $3 THEN now() ELSE deleted_at END WHERE id = $1",
            audience_id,
            version,
            delete,
        )
        await conn.execute(
            "DELETE FROM memberships WHERE audience_id = $1 AND version < $2", audience_id, version
        )
    await redis.register_script(source("mark_cleared"))(
        keys=[
            keys.CLEARED,
            keys.backlog_key(audience_id),
            keys.BACKLOG_TOTAL,
            keys.ACTIVE_LIST,
            keys.ACTIVE_SET,
            keys.stats_key(audience_id),
        ],
        args=[audience_id, version],
    )
    return version


async def memberships(db: Any, audience_id: int) -> dict[str, tuple[bool, int]]:
    """Every stored row of an audience, tombstones included: profile -> (member, version)."""
    rows = await db.fetch(
        "SELECT profile_id, member, version FROM memberships WHERE audience_id = $1", audience_id
    )
    return {r["profile_id"]: (r["member"], r["version"]) for r in rows}


async def stats(redis: aioredis.Redis, audience_id: int) -> dict[str, int]:
    raw = await redis.hgetall(keys.stats_key(audience_id))  # type: ignore[misc]
    return {k.decode(): int(v) for k, v in raw.items()}
