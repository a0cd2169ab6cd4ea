"""The SQL the edge runs: API keys, audiences, and the read API's queries."""

from __future__ import annotations

from collections.abc import Sequence
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


class _NotLive(Exception):
    """Raised inside ``clear_audience``'s transaction to undo it."""


# Membership rows are locked in key order, then the audience row: the order a worker's upsert
# takes them in (worker/applier.py), so a clear and a batch never wait for each other in a cycle.
_CLEAR_MEMBERSHIPS_SQL = """DELETE FROM memberships
    WHERE audience_id = $1 AND version < $2 AND profile_id IN (
        SELECT profile_id FROM memberships WHERE audience_id = $1 AND version < $2
        ORDER BY profile_id FOR UPDATE)"""


async def clear_audience(
    conn: asyncpg.Connection, audience_id: int, version: int, *, delete: bool
) -> bool:
    """Supersede every membership older than ``version`` (and delete the audience when asked),
    in one transaction. False if the audience is unknown or already deleted."""
    try:
        async with conn.transaction():
            await conn.execute(_CLEAR_MEMBERSHIPS_SQL, audience_id, version)
            found = await conn.fetchval(
                """UPDATE audiences
                   SET cleared_version = greatest(cleared_version, $2),
                       deleted_at = CASE WHEN $3 THEN now() END,
                       last_update = now()
                   WHERE id = $1 AND deleted_at IS NULL RETURNING true""",
                audience_id,
                version,
                delete,
            )
            if not found:
                raise _NotLive
    except _NotLive:
        return False
    return True


async def live_audience_ids(pool: asyncpg.Pool, ids: Sequence[int]) -> list[int]:
    """Which of ``ids`` are live audiences, in one query."""
    rows = await pool.fetch(
        "SELECT id FROM audiences WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL", ids
    )
    return [int(r["id"]) for r in rows]


# The read API's queries below count only the current_memberships view's rows (migration 0004):
# members newer than the last clear, in a live audience.


async def audience_page(
    pool: asyncpg.Pool, limit: int, offset: int
) -> tuple[int, list[asyncpg.Record]]:
    """(number of live audiences, one page of them with ``members_count`` and ``attributes``)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        total = await conn.fetchval("SELECT count(*) FROM audiences WHERE deleted_at IS NULL")
        rows = await conn.fetch(
            f"""SELECT {_AUDIENCE_COLUMNS}, a.attributes::text AS attributes,
                   (SELECT count(*) FROM current_memberships c
                    WHERE c.audience_id = a.id) AS members_count
                FROM audiences a WHERE a.deleted_at IS NULL
                ORDER BY a.id LIMIT $1 OFFSET $2""",
            limit,
            offset,
        )
    return total, rows


# Reads the memberships_members index (audience_id, profile_id, WHERE member) in page order.
MEMBER_PAGE_SQL = """SELECT profile_id, updated_at FROM current_memberships
    WHERE audience_id = $1 ORDER BY profile_id LIMIT $2 OFFSET $3"""


async def member_page(
    pool: asyncpg.Pool, audience_id: int, limit: int, offset: int
) -> tuple[int, list[asyncpg.Record]] | None:
    """(number of current members, one page of ``profile_id, updated_at`` ordered by profile
    id), or None when the audience is not live."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        live = await conn.fetchval(
            "SELECT true FROM audiences WHERE id = $1 AND deleted_at IS NULL", audience_id
        )
        if live is None:
            return None
        total = await conn.fetchval(
            "SELECT count(*) FROM current_memberships WHERE audience_id = $1", audience_id
        )
        rows = await conn.fetch(MEMBER_PAGE_SQL, audience_id, limit, offset)
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
