"""Amplitude's cohort webhook (``/amplitude``): each cohort is an audience of the key's tenant,
each batch adds or removes members."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

import asyncpg
import msgspec
from aiohttp import web

from ingest import auth, profiles, store
from ingest.bodies import json_response, read_json
from ingest.errors import ERROR_RENDERER, BadRequest, render_talon
from ingest.services import audiences, changes
from ingest.state import DB, REDIS, SCRIPTS, State, Tenant
from schemas import keys
from schemas.amplitude import CohortSync, CohortSyncResult, CohortUser

routes = web.RouteTableDef()

INTEGRATION = "amplitude"

_decoder = msgspec.json.Decoder(CohortSync)
_object = msgspec.json.Decoder(dict[str, Any])


def create_app() -> web.Application:
    """The webhook, for keys of scope ``cdp`` (or ``all``), answering errors in the Integration
    API's shape."""
    app = web.Application(middlewares=[auth.key_required("cdp")])
    app[ERROR_RENDERER] = render_talon
    app.router.add_routes(routes)
    return app


def _properties(users: list[CohortUser]) -> dict[str, str]:
    """Profile id -> its ``user_properties`` as JSON object text, for the users that have some."""
    found: dict[str, str] = {}
    for index, user in enumerate(users):
        text = bytes(user.user_properties)
        if text == b"null":
            continue
        if not text.startswith(b"{"):
            raise BadRequest(
                "Invalid request body",
                "Expected `object` or `null`",
                pointer=f"/users/{index}/user_properties",
            )
        if text == b"{}":
            continue
        earlier = found.get(user.user_id)
        if earlier is None:
            found[user.user_id] = text.decode()
        else:
            # The same user twice in one batch (rare): the later value of each attribute wins.
            merged = _object.decode(earlier) | _object.decode(text)
            found[user.user_id] = msgspec.json.encode(merged).decode()
    return found


async def _store_properties(app: State, tenant: Tenant, found: dict[str, str]) -> None:
    try:
        await profiles.merge_attributes(app[DB], tenant.id, list(found), list(found.values()))
    except asyncpg.DataError as e:
        # JSON that msgspec accepts but jsonb cannot hold, e.g. a number past numeric's range.
        raise BadRequest(
            "Invalid request body", f"user_properties cannot be stored: {e}", pointer="/users"
        ) from e
    except asyncpg.ForeignKeyViolationError as e:
        # cohortsync-admin tenant remove deleted the tenant since its key was looked up.
        raise auth.unknown_key() from e


def _answer(
    audience_id: int | None, accepted: int, *, duplicate: bool, eta_seconds: float | None = None
) -> web.Response:
    return json_response(
        CohortSyncResult(
            audience_id=audience_id,
            accepted=accepted,
            duplicate=duplicate,
            eta_seconds=eta_seconds,
        )
    )


@routes.post("/cohorts")
async def cohort_sync(request: web.Request) -> web.Response:
    """200 (what Amplitude waits for) once the batch's changes are in Redis, or when its
    ``message_id`` was accepted before; nothing is enqueued on any other answer."""
    app = request.config_dict
    tenant = auth.tenant_of(request)
    body = await read_json(request, _decoder)
    seen = app[SCRIPTS].keys.tenant(tenant.id).seen(body.message_id)
    if await cast(Awaitable[int], app[REDIS].exists(seen)):
        # A retried batch must not rename the audience back or overwrite newer properties.
        row = await store.live_audience_by_integration(
            app[DB], tenant.id, INTEGRATION, body.cohort_id
        )
        return _answer(row["id"] if row else None, 0, duplicate=True)
    found = _properties(body.users)
    audience_id = await audiences.find_or_create(
        app, tenant, INTEGRATION, body.cohort_id, body.cohort_name
    )
    # Before the changes are accepted: a failure here leaves nothing enqueued and nothing seen,
    # so Amplitude's retry redoes the whole batch; properties are idempotent.
    if found:
        await _store_properties(app, tenant, found)
    code = keys.ACTION_CODE["add" if body.in_cohort else "delete"]
    entries = [code + profile_id for profile_id in dict.fromkeys(u.user_id for u in body.users)]
    groups = {audience_id: entries} if entries else {}
    try:
        accepted = await changes.accept_entries(app, tenant, groups, once=body.message_id)
    except changes.AlreadyAccepted:
        return _answer(audience_id, 0, duplicate=True)
    return _answer(audience_id, accepted.number, duplicate=False, eta_seconds=accepted.eta_seconds)
