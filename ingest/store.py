"""The SQL the edge runs: API keys, audiences, and the read API's queries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import TypeVar

import asyncpg
from msgspec import UNSET, UnsetType

from schemas.talon import NewAudience

T = TypeVar("T")

_AUDIENCE_COLUMNS = """a.id, a.account_id, a.name, a.description, a.sandbox, a.integration,
    a.integration_id, a.created_in_3rd_party, a.subscribed_applications_ids, a.created_at,
    a.last_update"""


async def find_api_key(pool: asyncpg.Pool, key_hash: bytes) -> asyncpg.Record | None:
    """The live key with this hash: ``id`` and ``scope``."""
    return await pool.fetchrow(
        "SELECT id, scope FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
    )


def given(value: T | UnsetType) -> T | None:
    """An optional request field as its column value: absent (UNSET) is NULL."""
    return None if value is UNSET else value


async def create_audience(
    conn: asyncpg.Pool | asyncpg.Connection, account_id: int, new: NewAudience
) -> asyncpg.Record:
    """Insert an audience; raises ``asyncpg.UniqueViolationError`` for a live duplicate
    integration + integrationId."""
    last_update = given(new.last_update)
    if last_update is not None and last_update.tzinfo is None:
        last_update = last_update.replace(tzinfo=UTC)
    row = await conn.fetchrow(
        f"""INSERT INTO audiences AS a (account_id, name, description, sandbox, integration,
                integration_id, created_in_3rd_party, subscribed_applications_ids, last_update)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {_AUDIENCE_COLUMNS}""",
        account_id,
        new.name,
        given(new.description),
        given(new.sandbox),
        given(new.integration),
        given(new.integration_id),
        given(new.created_in_3rd_party),
        given(new.subscribed_applications_ids),
        last_update,
    )
    assert row is not None
    return row


async def live_audience(
    conn: asyncpg.Pool | asyncpg.Connection, audience_id: int
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_AUDIENCE_COLUMNS} FROM audiences a WHERE id = $1 AND deleted_at IS NULL",
        audience_id,
    )


async def live_audience_by_integration(
    conn: asyncpg.Pool | asyncpg.Connection, integration: str | None, integration_id: str
) -> asyncpg.Record | None:
    """The live audience a third party knows by ``integration_id`` (the unique index's lookup)."""
    return await conn.fetchrow(
        f"""SELECT {_AUDIENCE_COLUMNS} FROM audiences a
            WHERE coalesce(integration, '') = coalesce($1, '') AND integration_id = $2
              AND deleted_at IS NULL""",
        integration,
        integration_id,
    )


async def live_audiences_by_integration(
    pool: asyncpg.Pool, integration: str | None, integration_ids: Sequence[str]
) -> dict[str, int]:
    """integrationId -> id of the live audiences a third party knows by those ids, in one query."""
    rows = await pool.fetch(
        """SELECT id, integration_id FROM audiences
           WHERE coalesce(integration, '') = coalesce($1, '') AND integration_id = ANY($2::text[])
             AND deleted_at IS NULL""",
        integration,
        integration_ids,
    )
    return {r["integration_id"]: int(r["id"]) for r in rows}


async def update_audience(
    conn: asyncpg.Pool | asyncpg.Connection,
    audience_id: int,
    name: str,
    subscribed_applications_ids: list[int] | None = None,
) -> asyncpg.Record | None:
    """Rename a live audience (and replace its applications when given); None if there is none."""
    return await conn.fetchrow(
        f"""UPDATE audiences AS a
            SET name = $2,
                subscribed_applications_ids = coalesce($3, subscribed_applications_ids)
            WHERE id = $1 AND deleted_at IS NULL
            RETURNING {_AUDIENCE_COLUMNS}""",
        audience_id,
        name,
        subscribed_applications_ids,
    )


async def merge_attributes(
    conn: asyncpg.Pool | asyncpg.Connection, audience_id: int, attributes_json: str
) -> bool:
    """Merge attributes (a JSON object) into a live audience's; False if there is none."""
    done = await conn.fetchval(
        """UPDATE audiences SET attributes = coalesce(attributes, '{}'::jsonb) || $2::jsonb
           WHERE id = $1 AND deleted_at IS NULL RETURNING true""",
        audience_id,
        attributes_json,
    )
    return bool(done)


# A clear locks only the audience row, the last row every writer of memberships locks
# (worker/applier.py, the count triggers of migration 0005), so it waits for no one holding a
# membership row. It takes its version while holding that lock: every batch that committed before
# holds older changes only (so the count starts again from 0), and every later one counts its rows
# against the new cleared_version.
_LOCK_LIVE_SQL = """SELECT cleared_version FROM audiences
    WHERE id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE"""
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
) -> int | None:
    """Supersede every membership of a live audience (and delete it when asked) in O(1): its
    ``cleared_version`` goes to a version from ``take_version`` and its count to 0; the
    superseded rows are left to the workers' sweeper. The version, or None if the audience is
    unknown or already deleted."""
    async with conn.transaction():
        if await conn.fetchval(_LOCK_LIVE_SQL, audience_id) is None:
            return None
        version = await take_version()
        await conn.execute(_CLEAR_SQL, audience_id, version, delete)
        await conn.execute(_SWEEP_SQL, audience_id, version, delete)
    return version


async def live_audience_ids(pool: asyncpg.Pool, ids: Sequence[int]) -> list[int]:
    """Which of ``ids`` are live audiences, in one query."""
    rows = await pool.fetch(
        "SELECT id FROM audiences WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL", ids
    )
    return [int(r["id"]) for r in rows]


# The read API's pages: ``members_count`` and ``audience_totals`` are kept by migration 0005's
# triggers, so no page counts rows. A page is either ``skip`` rows in (OFFSET: its cost grows
# with ``skip``) or the rows after a key (``after``: through an index, whatever the position).
# One row more than asked for says whether there are more.

AUDIENCE_PAGE_SQL = f"""SELECT {_AUDIENCE_COLUMNS}, a.attributes::text AS attributes,
        a.members_count
    FROM audiences a WHERE a.deleted_at IS NULL AND a.id > $3
    ORDER BY a.id LIMIT $1 OFFSET $2"""


async def audience_page(
    pool: asyncpg.Pool, limit: int, *, skip: int = 0, after: int = 0
) -> tuple[int, list[asyncpg.Record]]:
    """(number of live audiences, up to ``limit + 1`` of them from the position asked for,
    with ``members_count`` and ``attributes``)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        total = await conn.fetchval("SELECT live FROM audience_totals")
        rows = await conn.fetch(AUDIENCE_PAGE_SQL, limit + 1, skip, after)
    return total, rows


# Reads the memberships_members index (audience_id, profile_id, WHERE member) in page order.
# The count of current members is the audience's ``members_count``.
MEMBER_PAGE_SQL = """SELECT profile_id, updated_at FROM current_memberships
    WHERE audience_id = $1 AND profile_id > $4 ORDER BY profile_id LIMIT $2 OFFSET $3"""


async def member_page(
    pool: asyncpg.Pool, audience_id: int, limit: int, *, skip: int = 0, after: str = ""
) -> tuple[int, list[asyncpg.Record]] | None:
    """(number of current members, up to ``limit + 1`` of ``profile_id, updated_at`` ordered
    by profile id, from the position asked for), or None when the audience is not live."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        total = await conn.fetchval(
            "SELECT members_count FROM audiences WHERE id = $1 AND deleted_at IS NULL",
            audience_id,
        )
        if total is None:
            return None
        rows = await conn.fetch(MEMBER_PAGE_SQL, audience_id, limit + 1, skip, after)
    return total, rows


# Reads the memberships_profile index (profile_id, WHERE member), then each audience by its key.
PROFILE_AUDIENCES_SQL = """SELECT a.id, a.name FROM current_memberships c
    JOIN audiences a ON a.id = c.audience_id
    WHERE c.profile_id = $1
    ORDER BY a.id"""


async def profile_audiences(pool: asyncpg.Pool, profile_id: str) -> list[asyncpg.Record]:
    """The live audiences ``profile_id`` is a current member of: ``id, name``."""
    rows: list[asyncpg.Record] = await pool.fetch(PROFILE_AUDIENCES_SQL, profile_id)
    return rows
