"""Managing audiences for every surface: create, rename, set attributes, clear and delete."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from core.clears import clear_or_delete
from ingest import store
from ingest.auth import unknown_key
from ingest.errors import Conflict, NotFound
from ingest.state import DB, LIVE_AUDIENCES, SCRIPTS, SETTINGS, State, Tenant
from schemas.talon import Audience, NewAudience


def audience_from_row(row: asyncpg.Record) -> Audience:
    """The Integration API's Audience for a row of ``store``'s audience queries."""
    return Audience(
        account_id=row["account_id"],
        id=row["id"],
        created=row["created_at"],
        name=row["name"],
        sandbox=row["sandbox"],
        description=row["description"],
        subscribed_applications_ids=row["subscribed_applications_ids"],
        integration=row["integration"],
        integration_id=row["integration_id"],
        created_in_3rd_party=row["created_in_3rd_party"],
        last_update=row["last_update"],
    )


def audience_not_found(audience_id: int) -> NotFound:
    """404 for an audience named in the path that is unknown or deleted (or another tenant's:
    the same answer, so nothing tells that it exists)."""
    return NotFound(
        "Audience not found",
        f"Audience {audience_id} does not exist or was deleted",
        parameter="audienceId",
    )


async def create_audience(app: State, tenant: Tenant, new: NewAudience) -> Audience:
    """Create an audience of ``tenant`` (reporting its account id), synchronously in Postgres;
    ``Conflict`` (409) when a live audience of the tenant already has this integration +
    integrationId."""
    try:
        row = await store.create_audience(app[DB], tenant.id, tenant.account_id, new)
    except asyncpg.UniqueViolationError as e:
        raise Conflict(
            "Audience already exists",
            f"An audience with integrationId {new.integration_id!r} already exists"
            + (f" for integration {new.integration!r}" if new.integration else ""),
            pointer="/integrationId",
        ) from e
    except asyncpg.ForeignKeyViolationError as e:
        # cohortsync-admin tenant remove deleted the tenant since its key was looked up.
        raise unknown_key() from e
    audience = audience_from_row(row)
    cache_ttl_s = app[SETTINGS].audience_cache_ttl_s
    app[LIVE_AUDIENCES].put((tenant.id, audience.id), True, cache_ttl_s, time.monotonic())
    return audience


async def clear_audience(app: State, tenant: Tenant, audience_id: int, *, delete: bool) -> bool:
    """``core.clears.clear_or_delete`` with this edge's pools; False when the tenant has no
    such live audience."""
    found = await clear_or_delete(
        app[DB], app[SCRIPTS], audience_id, delete=delete, tenant=tenant.id
    )
    if found is None:
        return False
    if delete:
        app[LIVE_AUDIENCES].discard((tenant.id, audience_id))
    return True


async def update_audience(
    app: State,
    tenant: Tenant,
    audience_id: int,
    name: str,
    subscribed_applications_ids: list[int] | None = None,
) -> Audience | None:
    """Rename a live audience of the tenant (and replace its applications when given); None if
    it has none such."""
    row = await store.update_audience(
        app[DB], tenant.id, audience_id, name, subscribed_applications_ids
    )
    return audience_from_row(row) if row is not None else None


async def set_attributes(
    app: State, tenant: Tenant, audience_id: int, attributes: dict[str, Any]
) -> bool:
    """Merge attributes into a live audience's of the tenant, applied lazily: readers see them
    with the audience. False if it has none such."""
    encoded = msgspec.json.encode(attributes).decode()
    return await store.merge_attributes(app[DB], tenant.id, audience_id, encoded)


async def find_or_create(
    app: State, tenant: Tenant, integration: str, integration_id: str, name: str
) -> int:
    """The id of the tenant's live audience a third party knows as ``integration_id``: created
    on first sight, renamed when its name changed."""
    pool = app[DB]
    row = await store.live_audience_by_integration(pool, tenant.id, integration, integration_id)
    if row is None:
        new = NewAudience(
            name=name,
            integration=integration,
            integration_id=integration_id,
            created_in_3rd_party=True,
        )
        try:
            return (await create_audience(app, tenant, new)).id
        except Conflict:
            # Another request of the same first sync (Amplitude sends 4 at once) created it.
            row = await store.live_audience_by_integration(
                pool, tenant.id, integration, integration_id
            )
            if row is None:
                raise
    if row["name"] != name:
        await store.update_audience(pool, tenant.id, row["id"], name)
    return int(row["id"])
