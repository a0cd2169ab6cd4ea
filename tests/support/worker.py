"""What the worker tests do to Redis and Postgres the way the edge would: accept, clear, read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from core.clears import clear_or_delete
from schemas import keys
from schemas.keys import STATS_IN_TOTALS, STATS_TENANT
from tests.support.redis_keys import KEYS, scripts
from worker.sweeper import sweep_once

Changes = Sequence[tuple[keys.Action, str]]


async def new_audience(db: Any, name: str = "cohort") -> int:
    """An audience inserted straight into Postgres, as another edge process would: an edge
    learns of it on a cache miss."""
    audience_id: int = await db.fetchval(
        "INSERT INTO audiences (account_id, name) VALUES (1, $1) RETURNING id", name
    )
    return audience_id


async def accept(
    redis: aioredis.Redis, audience_id: int, changes: Changes, tenant: int = keys.DEFAULT_TENANT
) -> list[int]:
    """Append changes to an audience (of ``tenant``)'s backlog as the edge does (accept.lua);
    returns their versions."""
    before = await redis.llen(KEYS.backlog(audience_id))  # type: ignore[misc]
    entries = [keys.ACTION_CODE[action] + profile for action, profile in changes]
    accepted = await scripts(redis).backlogs.accept(
        {audience_id: entries}, max_backlog=10**12, tenant=tenant
    )
    assert accepted[:2] == ("accepted", len(changes))
    queued = await redis.lrange(KEYS.backlog(audience_id), before, -1)  # type: ignore[misc]
    return [keys.decode_entry(e.decode())[2] for e in queued]


async def clear(
    db: Any,
    redis: aioredis.Redis,
    audience_id: int,
    *,
    delete: bool = False,
    tenant: int = keys.DEFAULT_TENANT,
) -> int:
    """The edge's own DELETE .../memberships (or of the audience, of ``tenant``): returns the
    clear's version."""
    version = await clear_or_delete(db, scripts(redis), audience_id, delete=delete, tenant=tenant)
    assert version is not None, f"audience {audience_id} is not live"
    return version


async def current_count(db: Any, audience_id: int) -> int:
    """The audience's current members as ``current_memberships`` counts them, after checking
    that its kept ``members_count`` says the same (0 for a deleted audience)."""
    row = await db.fetchrow(
        """SELECT a.members_count,
                  (SELECT count(*) FROM current_memberships c WHERE c.audience_id = a.id) AS n
           FROM audiences a WHERE a.id = $1""",
        audience_id,
    )
    assert row["members_count"] == row["n"], f"audience {audience_id}: kept {dict(row)}"
    n: int = row["n"]
    return n


async def sweep_all(db: Any) -> int:
    """What the workers' sweepers do after clears and deletes, to the end: the rows deleted."""
    deleted = 0
    while (swept := await sweep_once(db)) is not None:
        deleted += swept.deleted
    return deleted


async def memberships(db: Any, audience_id: int) -> dict[str, tuple[bool, int]]:
    """Every stored row of an audience, tombstones included: profile -> (member, version)."""
    rows = await db.fetch(
        "SELECT profile_id, member, version FROM memberships WHERE audience_id = $1", audience_id
    )
    return {r["profile_id"]: (r["member"], r["version"]) for r in rows}


async def stats(redis: aioredis.Redis, audience_id: int) -> dict[str, int]:
    """An audience's counters, without the mark that they are in the totals."""
    raw = await redis.hgetall(KEYS.stats(audience_id))  # type: ignore[misc]
    marks = (STATS_IN_TOTALS, STATS_TENANT)
    return {k.decode(): int(v) for k, v in raw.items() if k.decode() not in marks}
