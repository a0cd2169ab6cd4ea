"""Integration API audience endpoints: create, rename, delete, clear, set attributes."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from ingest import store
from ingest.bodies import json_response, path_id, read_json
from ingest.errors import BadRequest, Conflict, NotFound
from ingest.state import DB, LIVE_AUDIENCES, SCRIPTS, SETTINGS, Scripts
from schemas import keys
from schemas.talon import Audience, NewAudience, UpdateAudience

routes = web.RouteTableDef()

_new_audience = msgspec.json.Decoder(NewAudience)
_update_audience = msgspec.json.Decoder(UpdateAudience)
_attributes = msgspec.json.Decoder(dict[str, Any])


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
    """404 for an audience named in the path that is unknown or deleted."""
    return NotFound(
        "Audience not found",
        f"Audience {audience_id} does not exist or was deleted",
        parameter="audienceId",
    )


def _check_unique(ids: list[int] | UnsetType) -> None:
    # The contract says uniqueItems; msgspec has no such constraint.
    if ids is not UNSET and len(set(ids)) != len(ids):
        raise BadRequest(
            "Invalid request body",
            "subscribedApplicationsIds must not repeat an id",
            pointer="/subscribedApplicationsIds",
        )


async def create_audience(app: web.Application, new: NewAudience) -> Audience:
    """Create an audience, synchronously in Postgres; ``Conflict`` (409) when a live audience
    already has this integration + integrationId."""
    try:
        row = await store.create_audience(app[DB], app[SETTINGS].account_id, new)
    except asyncpg.UniqueViolationError as e:
        raise Conflict(
            "Audience already exists",
            f"An audience with integrationId {new.integration_id!r} already exists"
            + (f" for integration {new.integration!r}" if new.integration else ""),
            pointer="/integrationId",
        ) from e
    audience = audience_from_row(row)
    app[LIVE_AUDIENCES].put(audience.id, True, app[SETTINGS].audience_cache_ttl_s, time.monotonic())
    return audience


async def clear_or_delete(
    pool: asyncpg.Pool, scripts: Scripts, audience_id: int, *, delete: bool
) -> int | None:
    """Remove every member of a live audience (and the audience itself when ``delete``);
    the clear's version, or None when the audience is unknown or deleted.

    Order matters (ARCHITECTURE.md): take a version after every change accepted so far, commit
    the clear in Postgres, then tell Redis so the dispatcher drops the superseded backlog.
    """
    if await store.live_audience(pool, audience_id) is None:
        return None
    version = int(await scripts.next_version(keys=[keys.VERSIONS], args=[audience_id]))
    async with pool.acquire() as conn:
        if not await store.clear_audience(conn, audience_id, version, delete=delete):
            return None
    await scripts.mark_cleared(
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


async def clear_audience(app: web.Application, audience_id: int, *, delete: bool) -> bool:
    """``clear_or_delete`` with this edge's pools; False when the audience is not live."""
    if await clear_or_delete(app[DB], app[SCRIPTS], audience_id, delete=delete) is None:
        return False
    if delete:
        app[LIVE_AUDIENCES].discard(audience_id)
    return True


@routes.post("/v2/audiences")
async def create(request: web.Request) -> web.Response:
    new = await read_json(request, _new_audience)
    _check_unique(new.subscribed_applications_ids)
    return json_response(await create_audience(request.app, new), status=201)


@routes.put("/v2/audiences/{audienceId}")
async def update(request: web.Request) -> web.Response:
    audience_id = path_id(request, "audienceId")
    body = await read_json(request, _update_audience)
    _check_unique(body.subscribed_applications_ids)
    row = await store.update_audience(
        request.app[DB], audience_id, body.name, store.given(body.subscribed_applications_ids)
    )
    if row is None:
        raise audience_not_found(audience_id)
    return json_response(audience_from_row(row))


@routes.delete("/v2/audiences/{audienceId}")
async def delete(request: web.Request) -> web.Response:
    return await _clear(request, delete=True)


@routes.delete("/v2/audiences/{audienceId}/memberships")
async def delete_memberships(request: web.Request) -> web.Response:
    return await _clear(request, delete=False)


async def _clear(request: web.Request, *, delete: bool) -> web.Response:
    audience_id = path_id(request, "audienceId")
    if not await clear_audience(request.app, audience_id, delete=delete):
        raise audience_not_found(audience_id)
    return web.Response(status=204)


@routes.put("/v2/audience_customers/{audienceId}/attributes")
async def set_attributes(request: web.Request) -> web.Response:
    """Stored on the audience and applied lazily: readers see them with the audience."""
    audience_id = path_id(request, "audienceId")
    attributes = await read_json(request, _attributes)
    encoded = msgspec.json.encode(attributes).decode()
    if not await store.merge_attributes(request.app[DB], audience_id, encoded):
        raise audience_not_found(audience_id)
    return web.Response(status=204)
