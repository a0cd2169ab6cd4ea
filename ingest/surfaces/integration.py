"""The Talon.One Integration API (``/v2``): audiences, their members and attributes, and the ping a
CDP calls to show "Connected"."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from ingest import auth
from ingest.bodies import json_response, path_id, read_json
from ingest.errors import ERROR_RENDERER, BadRequest, render_talon
from ingest.services import audiences, changes
from ingest.store import given
from schemas import keys
from schemas.talon import CustomerAudiences, ErrorSource, NewAudience, UpdateAudience

routes = web.RouteTableDef()

_new_audience = msgspec.json.Decoder(NewAudience)
_update_audience = msgspec.json.Decoder(UpdateAudience)
_attributes = msgspec.json.Decoder(dict[str, Any])
_customer_audiences = msgspec.json.Decoder(CustomerAudiences)


def create_app() -> web.Application:
    """The Integration API, for keys of scope ``integration`` (or ``all``)."""
    app = web.Application(middlewares=[auth.key_required("integration")])
    app[ERROR_RENDERER] = render_talon
    app.router.add_routes(routes)
    return app


def create_ping_app() -> web.Application:
    """``GET /v2/authping`` apart from the rest of ``/v2``: a CDP's key may call it too."""
    app = web.Application(middlewares=[auth.key_required("integration", "cdp")])
    app[ERROR_RENDERER] = render_talon
    # Mounted at the ping's own path: its one route is the sub-application's root.
    app.router.add_get("", authping)
    return app


async def authping(request: web.Request) -> web.Response:
    """Lets a CDP show "Connected": the middleware already checked the key."""
    return web.Response(status=204)


def _check_unique(ids: list[int] | UnsetType) -> None:
    # The contract says uniqueItems; msgspec has no such constraint.
    if ids is not UNSET and len(set(ids)) != len(ids):
        raise BadRequest(
            "Invalid request body",
            "subscribedApplicationsIds must not repeat an id",
            pointer="/subscribedApplicationsIds",
        )


@routes.post("/audiences")
async def create(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    new = await read_json(request, _new_audience)
    _check_unique(new.subscribed_applications_ids)
    created = await audiences.create_audience(request.config_dict, tenant, new)
    return json_response(created, status=201)


@routes.put("/audiences/{audienceId}")
async def update(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    audience_id = path_id(request, "audienceId")
    body = await read_json(request, _update_audience)
    _check_unique(body.subscribed_applications_ids)
    audience = await audiences.update_audience(
        request.config_dict,
        tenant,
        audience_id,
        body.name,
        given(body.subscribed_applications_ids),
    )
    if audience is None:
        raise audiences.audience_not_found(audience_id)
    return json_response(audience)


@routes.delete("/audiences/{audienceId}")
async def delete(request: web.Request) -> web.Response:
    return await _clear(request, delete=True)


@routes.delete("/audiences/{audienceId}/memberships")
async def delete_memberships(request: web.Request) -> web.Response:
    return await _clear(request, delete=False)


async def _clear(request: web.Request, *, delete: bool) -> web.Response:
    tenant = auth.tenant_of(request)
    audience_id = path_id(request, "audienceId")
    if not await audiences.clear_audience(request.config_dict, tenant, audience_id, delete=delete):
        raise audiences.audience_not_found(audience_id)
    return web.Response(status=204)


@routes.put("/audience_customers/{audienceId}/attributes")
async def set_attributes(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    audience_id = path_id(request, "audienceId")
    attributes = await read_json(request, _attributes)
    if not await audiences.set_attributes(request.config_dict, tenant, audience_id, attributes):
        raise audiences.audience_not_found(audience_id)
    return web.Response(status=204)


@routes.post("/customer_audiences")
async def update_customer_audiences(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    body = await read_json(request, _customer_audiences)
    # Per action only a dict lookup and one string build: no awaits, no Redis calls (and no
    # tuples for accept_changes: this is the hot path).
    groups: dict[int, list[str]] = {}
    code = keys.ACTION_CODE
    for item in body.data:
        entries = groups.get(item.audience_id)
        if entries is None:
            entries = groups[item.audience_id] = []
        entries.append(code[item.action] + item.profile_integration_id)
    try:
        accepted = await changes.accept_entries(request.config_dict, tenant, groups)
    except changes.UnknownAudiences as e:
        # Point at the first change that named each unknown audience.
        first: dict[int, int] = {}
        for index, item in enumerate(body.data):
            first.setdefault(item.audience_id, index)
        e.errors = [
            changes.not_found_item(i, ErrorSource(pointer=f"/data/{first[i]}/audienceId"))
            for i in e.audience_ids
        ]
        raise
    return web.Response(status=204, headers=accepted.headers())
