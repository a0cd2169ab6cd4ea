"""Customer profile attributes: stored from Amplitude's ``user_properties``, read merged with the
attributes set on the audiences the profile is a member of; per tenant (the same profile id in
two tenants is two profiles)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from schemas.profiles import ProfileAttributes

# Sorted by profile id so that concurrent requests lock rows in the same order (no deadlocks).
_MERGE_SQL = """INSERT INTO profile_attributes AS p (tenant_id, profile_id, attributes)
    SELECT $3, u.profile_id, u.attributes::jsonb
    FROM unnest($1::text[], $2::text[]) AS u (profile_id, attributes)
    ORDER BY u.profile_id
    ON CONFLICT (tenant_id, profile_id) DO UPDATE
    SET attributes = p.attributes || EXCLUDED.attributes, updated_at = now()"""

# Audience-wide attributes (PUT /v2/audience_customers/{id}/attributes) of the current
# memberships, in audience id order, then the profile's own on top: the specific value wins.
_READ_SQL = """SELECT (coalesce(shared.attributes, '{}'::jsonb)
                       || coalesce(own.attributes, '{}'::jsonb))::text AS attributes,
        own.updated_at
    FROM (SELECT jsonb_object_agg(e.key, e.value ORDER BY a.id) AS attributes
          FROM current_memberships c
          JOIN audiences a ON a.id = c.audience_id
          CROSS JOIN LATERAL jsonb_each(a.attributes) AS e
          WHERE c.profile_id = $1 AND a.tenant_id = $2) AS shared
    LEFT JOIN profile_attributes own ON own.tenant_id = $2 AND own.profile_id = $1"""


async def merge_attributes(
    conn: asyncpg.Pool | asyncpg.Connection,
    tenant: int,
    profile_ids: Sequence[str],
    attributes_json: Sequence[str],
) -> None:
    """Merge each of the tenant's profiles' attributes (JSON object text) into its stored ones,
    in one statement: the latest value of each attribute wins. ``profile_ids`` must not
    repeat."""
    await conn.execute(_MERGE_SQL, profile_ids, attributes_json, tenant)


async def read_attributes(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: int, profile_id: str
) -> ProfileAttributes:
    """A profile's own attributes in the tenant laid over those of the tenant's audiences it
    is a member of."""
    row = await conn.fetchrow(_READ_SQL, profile_id, tenant)
    assert row is not None
    return ProfileAttributes(
        integration_id=profile_id,
        attributes=msgspec.Raw(row["attributes"].encode()),
        updated=row["updated_at"],
    )
