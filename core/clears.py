"""Clearing and deleting an audience: Postgres first, then Redis; the edge's DELETEs and
``cohortsync-admin tenant remove --purge`` take this one path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from core.scripts import Scripts

# A clear locks only the audience row, the last row every writer of memberships locks
# (worker/applier.py, the count triggers of migration 0005), so it waits for no one holding a
# membership row. It takes its version while holding that lock: every batch that committed before
# holds older changes only (so the count starts again from 0), and every later one counts its rows
# against the new cleared_version.
_LOCK_LIVE_SQL = """SELECT cleared_version FROM audiences
    WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL FOR NO KEY UPDATE"""
_CLEAR_SQL = """UPDATE audiences
    SET members_count = CASE WHEN $2 > cleared_version THEN 0 ELSE members_count END,
        cleared_version = greatest(cleared_version, $2),
        deleted_at = CASE WHEN $3 THEN now() END,
        last_update = now()
    WHERE id = $1"""
# Every row of a deleted audience goes; of a cleared one, those the clear superseded.
_SWEEP_SQL = """INSERT INTO membership_sweeps AS s (audience_id, up_to_version)
    VALUES ($1, CASE WHEN $3 THEN 9223372036854775807 ELSE $2 END)
    ON CONFLICT (audience_id) DO UPDATE
    SET up_to_version = greatest(s.up_to_version, EXCLUDED.up_to_version), after_profile_id = ''"""


async def clear_audience(
    conn: asyncpg.Connection,
    audience_id: int,
    take_version: Callable[[], Awaitable[int]],
    *,
    delete: bool,
    tenant: int,
) -> int | None:
    """Supersede every membership of a live audience of ``tenant`` (and delete it when asked)
    in O(1): its ``cleared_version`` goes to a version from ``take_version`` and its count to 0;
    the superseded rows are left to the workers' sweeper. The version, or None if the tenant
    has no such live audience."""
    async with conn.transaction():
        if await conn.fetchval(_LOCK_LIVE_SQL, audience_id, tenant) is None:
            return None
        version = await take_version()
        await conn.execute(_CLEAR_SQL, audience_id, version, delete)
        await conn.execute(_SWEEP_SQL, audience_id, version, delete)
    return version


async def clear_or_delete(
    db: asyncpg.Pool | asyncpg.Connection,
    scripts: Scripts,
    audience_id: int,
    *,
    delete: bool,
    tenant: int,
) -> int | None:
    """Remove every member of a live audience of ``tenant`` (and the audience itself when
    ``delete``), in O(1): the rows go later, swept by the workers; the clear's version, or None
    when the tenant has no such live audience.

    Order matters (ARCHITECTURE.md): take a version after every change accepted so far, commit
    the clear in Postgres, then tell Redis so the dispatcher drops the superseded backlog.
    """

    async def take_version() -> int:
        return await scripts.backlogs.next_version(audience_id)

    if isinstance(db, asyncpg.Connection):
        version = await clear_audience(db, audience_id, take_version, delete=delete, tenant=tenant)
    else:
        async with db.acquire() as conn:
            version = await clear_audience(
                conn, audience_id, take_version, delete=delete, tenant=tenant
            )
    if version is None:
        return None
    await scripts.backlogs.mark_cleared(audience_id, version, deleted=delete, tenant=tenant)
    return version
