"""The SQL the edge runs: API keys, audiences, and the read API's queries; every audience query
is scoped by the tenant of the request's key."""

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
    """The live key with this hash: ``id``, ``scope`` and its tenant's ``tenant_id``,
    ``hostname`` and ``account_id`` (NULL for an ``ops`` key)."""
    return await pool.fetchrow(
        """SELECT k.id, k.scope, k.tenant_id, t.hostname, t.account_id
           FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id
           WHERE k.key_hash = $1 AND k.revoked_at IS NULL""",
        key_hash,
    )


async def tenant_named(pool: asyncpg.Pool, hostname: str) -> int | None:
    """The id of the tenant ``hostname`` (lower-case) names, if any."""
    found: int | None = await pool.fetchval("SELECT id FROM tenants WHERE hostname = $1", hostname)
    return found


def given(value: T | UnsetType) -> T | None:
    """An optional request field as its column value: absent (UNSET) is NULL."""
    return None if value is UNSET else value


async def create_audience(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: int, account_id: int, new: NewAudience
) -> asyncpg.Record:
    """Insert an audience of ``tenant``; raises ``asyncpg.UniqueViolationError`` for a live
    duplicate integration + integrationId in that tenant."""
    last_update = given(new.last_update)
    if last_update is not None and last_update.tzinfo is None:
        last_update = last_update.replace(tzinfo=UTC)
    row = await conn.fetchrow(
        f"""INSERT INTO audiences AS a (tenant_id, account_id, name, description, sandbox,
                integration, integration_id, created_in_3rd_party, subscribed_applications_ids,
                last_update)
            VALUES ($10, $1, $2, $3, $4, $5, $6, $7, $8, $9)
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
        tenant,
    )
    assert row is not None
    return row


async def live_audience_by_integration(
    conn: asyncpg.Pool | asyncpg.Connection,
    tenant: int,
    integration: str | None,
    integration_id: str,
) -> asyncpg.Record | None:
    """The tenant's live audience a third party knows by ``integration_id`` (the unique
    index's lookup)."""
    return await conn.fetchrow(
        f"""SELECT {_AUDIENCE_COLUMNS} FROM audiences a
            WHERE tenant_id = $3 AND coalesce(integration, '') = coalesce($1, '')
              AND integration_id = $2 AND deleted_at IS NULL""",
        integration,
        integration_id,
        tenant,
    )


async def live_audiences_by_integration(
    pool: asyncpg.Pool, tenant: int, integration: str | None, integration_ids: Sequence[str]
) -> dict[str, int]:
    """integrationId -> id of the tenant's live audiences a third party knows by those ids, in
    one query."""
    rows = await pool.fetch(
        """SELECT id, integration_id FROM audiences
           WHERE tenant_id = $3 AND coalesce(integration, '') = coalesce($1, '')
             AND integration_id = ANY($2::text[]) AND deleted_at IS NULL""",
        integration,
        integration_ids,
        tenant,
    )
    return {r["integration_id"]: int(r["id"]) for r in rows}


async def update_audience(
    conn: asyncpg.Pool | asyncpg.Connection,
    tenant: int,
    audience_id: int,
    name: str,
    subscribed_applications_ids: list[int] | None = None,
) -> asyncpg.Record | None:
    """Rename a live audience of the tenant (and replace its applications when given); None if
    it has none such."""
    return await conn.fetchrow(
        f"""UPDATE audiences AS a
            SET name = $2,
                subscribed_applications_ids = coalesce($3, subscribed_applications_ids)
            WHERE id = $1 AND tenant_id = $4 AND deleted_at IS NULL
            RETURNING {_AUDIENCE_COLUMNS}""",
        audience_id,
        name,
        subscribed_applications_ids,
        tenant,
    )


async def merge_attributes(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: int, audience_id: int, attributes_json: str
) -> bool:
    """Merge attributes (a JSON object) into a live audience's of the tenant; False if it has
    none such."""
    done = await conn.fetchval(
        """UPDATE audiences SET attributes = coalesce(attributes, '{}'::jsonb) || $2::jsonb
           WHERE id = $1 AND tenant_id = $3 AND deleted_at IS NULL RETURNING true""",
        audience_id,
        attributes_json,
        tenant,
    )
    return bool(done)


async def live_audience_ids(pool: asyncpg.Pool, tenant: int, ids: Sequence[int]) -> list[int]:
    """Which of ``ids`` are live audiences of the tenant, in one query."""
    rows = await pool.fetch(
        """SELECT id FROM audiences
           WHERE id = ANY($1::bigint[]) AND tenant_id = $2 AND deleted_at IS NULL""",
        ids,
        tenant,
    )
    return [int(r["id"]) for r in rows]


# The read API's pages: ``members_count`` and ``tenants.live_audiences`` are kept by the
# triggers of migrations 0005 and 0006, so no page counts rows. A page is either ``skip`` rows
# in (OFFSET: its cost grows with ``skip``) or the rows after a key (``after``: through an index,
# whatever the position). One row more than asked for says whether there are more.

AUDIENCE_PAGE_SQL = f"""SELECT {_AUDIENCE_COLUMNS}, a.attributes::text AS attributes,
        a.members_count
    FROM audiences a WHERE a.tenant_id = $4 AND a.deleted_at IS NULL AND a.id > $3
    ORDER BY a.id LIMIT $1 OFFSET $2"""


async def audience_page(
    pool: asyncpg.Pool, tenant: int, limit: int, *, skip: int = 0, after: int = 0
) -> tuple[int, list[asyncpg.Record]]:
    """(number of the tenant's live audiences, up to ``limit + 1`` of them from the position
    asked for, with ``members_count`` and ``attributes``)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        total = await conn.fetchval("SELECT live_audiences FROM tenants WHERE id = $1", tenant)
        rows = await conn.fetch(AUDIENCE_PAGE_SQL, limit + 1, skip, after, tenant)
    return total or 0, rows


# Reads the memberships_members index (audience_id, profile_id, WHERE member) in page order.
# The count of current members is the audience's ``members_count``.
MEMBER_PAGE_SQL = """SELECT profile_id, updated_at FROM current_memberships
    WHERE audience_id = $1 AND profile_id > $4 ORDER BY profile_id LIMIT $2 OFFSET $3"""


async def member_page(
    pool: asyncpg.Pool,
    tenant: int,
    audience_id: int,
    limit: int,
    *,
    skip: int = 0,
    after: str = "",
) -> tuple[int, list[asyncpg.Record]] | None:
    """(number of current members, up to ``limit + 1`` of ``profile_id, updated_at`` ordered
    by profile id, from the position asked for), or None when the audience is not a live one
    of the tenant."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        total = await conn.fetchval(
            """SELECT members_count FROM audiences
               WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL""",
            audience_id,
            tenant,
        )
        if total is None:
            return None
        rows = await conn.fetch(MEMBER_PAGE_SQL, audience_id, limit + 1, skip, after)
    return total, rows


# Reads the memberships_profile index (profile_id, WHERE member), then each audience by its key;
# the same profile id in another tenant is another profile.
PROFILE_AUDIENCES_SQL = """SELECT a.id, a.name FROM current_memberships c
    JOIN audiences a ON a.id = c.audience_id
    WHERE c.profile_id = $1 AND a.tenant_id = $2
    ORDER BY a.id"""


async def profile_audiences(
    pool: asyncpg.Pool, tenant: int, profile_id: str
) -> list[asyncpg.Record]:
    """The tenant's live audiences ``profile_id`` is a current member of: ``id, name``."""
    rows: list[asyncpg.Record] = await pool.fetch(PROFILE_AUDIENCES_SQL, profile_id, tenant)
    return rows
