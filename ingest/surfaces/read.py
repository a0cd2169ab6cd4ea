"""The read API (``/v1``) for the rule engine and operators: the audiences of the key's tenant,
their members, a profile's audiences and attributes, and the queue's status (which an ``ops``
key, of no tenant, may read too)."""

from __future__ import annotations

from typing import NamedTuple

import msgspec
from aiohttp import web

from core.snapshot import read_status
from ingest import auth, profiles, store
from ingest.bodies import json_response, path_id, path_text, query_int
from ingest.errors import ERROR_RENDERER, BadRequest, render_talon
from ingest.services.audiences import audience_from_row, audience_not_found
from ingest.state import API_KEY, DB, SCRIPTS, SETTINGS
from schemas import cursors
from schemas.apikeys import OPS
from schemas.status import DEFAULT_STATUS_PAGE_SIZE, MAX_STATUS_PAGE_SIZE, decode_cursor
from schemas.talon import (
    BIGINT_MAX,
    AudiencePage,
    AudienceRef,
    AudienceWithCount,
    Member,
    MemberPage,
    ProfileAudiences,
)

routes = web.RouteTableDef()
# The operations port serves the status too: the dashboard polls it from its own origin.
status_routes = web.RouteTableDef()

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def create_app(*, status_only: bool = False) -> web.Application:
    """The read API, for keys of scope ``read`` (or ``all``), and ``ops`` keys, which every
    route but ``/v1/status`` refuses (they belong to no tenant); on the operations port only
    ``/v1/status`` (``status_only``)."""
    app = web.Application(middlewares=[auth.key_required("read", OPS)])
    app[ERROR_RENDERER] = render_talon
    if not status_only:
        app.router.add_routes(routes)
    app.router.add_routes(status_routes)
    return app


class _Paging(NamedTuple):
    page_size: int
    skip: int
    cursor: cursors.Cursor | None


def _paging(request: web.Request) -> _Paging:
    page_size = query_int(request, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    skip = query_int(request, "skip", 0, 0, BIGINT_MAX)
    raw = request.query.get("cursor")
    if raw is None:
        return _Paging(page_size, skip, None)
    if "skip" in request.query:
        raise BadRequest(
            "Invalid query parameter", "Pass either skip or cursor, not both", parameter="cursor"
        )
    try:
        return _Paging(page_size, 0, cursors.decode(raw))
    except cursors.BadCursor as e:
        raise _bad_cursor() from e


def _bad_cursor() -> BadRequest:
    return BadRequest(
        "Invalid query parameter",
        "cursor must be one this endpoint returned (as it was, for the same audience)",
        parameter="cursor",
    )


@routes.get("/audiences")
async def list_audiences(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    paging = _paging(request)
    after = 0
    if paging.cursor is not None:
        if not isinstance(paging.cursor, cursors.AudiencesAfter):
            raise _bad_cursor()
        after = paging.cursor.audience_id
    total, rows = await store.audience_page(
        request.config_dict[DB], tenant.id, paging.page_size, skip=paging.skip, after=after
    )
    data = [
        AudienceWithCount(
            **msgspec.structs.asdict(audience_from_row(row)),
            members_count=row["members_count"],
            attributes=msgspec.Raw(row["attributes"]) if row["attributes"] is not None else None,
        )
        for row in rows[: paging.page_size]
    ]
    cursor = cursors.encode(cursors.AudiencesAfter(data[-1].id)) if data else None
    page = AudiencePage(total, len(rows) > paging.page_size, data, cursor)
    return json_response(page)


@routes.get("/audiences/{audienceId}/memberships")
async def list_members(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    audience_id = path_id(request, "audienceId")
    paging = _paging(request)
    after = ""
    if paging.cursor is not None:
        if (
            not isinstance(paging.cursor, cursors.MembersAfter)
            or paging.cursor.audience_id != audience_id
        ):
            raise _bad_cursor()
        after = paging.cursor.profile_id
    found = await store.member_page(
        request.config_dict[DB],
        tenant.id,
        audience_id,
        paging.page_size,
        skip=paging.skip,
        after=after,
    )
    if found is None:
        raise audience_not_found(audience_id)
    total, rows = found
    data = [
        Member(profile_integration_id=r["profile_id"], updated=r["updated_at"])
        for r in rows[: paging.page_size]
    ]
    cursor = (
        cursors.encode(cursors.MembersAfter(audience_id, data[-1].profile_integration_id))
        if data
        else None
    )
    page = MemberPage(total, len(rows) > paging.page_size, data, cursor)
    return json_response(page)


@routes.get("/customer_profiles/{integrationId}/audiences")
async def profile_audiences(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    profile_id = path_text(request, "integrationId")
    rows = await store.profile_audiences(request.config_dict[DB], tenant.id, profile_id)
    return json_response(ProfileAudiences([AudienceRef(r["id"], r["name"]) for r in rows]))


@routes.get("/customer_profiles/{integrationId}/attributes")
async def profile_attributes(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    profile_id = path_text(request, "integrationId")
    found = await profiles.read_attributes(request.config_dict[DB], tenant.id, profile_id)
    return json_response(found)


@status_routes.get("/status")
async def get_status(request: web.Request) -> web.Response:
    config = request.config_dict
    page_size = query_int(request, "pageSize", DEFAULT_STATUS_PAGE_SIZE, 1, MAX_STATUS_PAGE_SIZE)
    cursor = None
    if (raw := request.query.get("cursor")) is not None:
        try:
            cursor = decode_cursor(raw)
        except ValueError:
            raise BadRequest(
                "Invalid query parameter",
                "cursor must be the nextCursor of a previous page",
                parameter="cursor",
            ) from None
    # A tenant's key sees its own audiences, totals and rate; an ops key the fleet's, with the
    # tenants with work, busiest first.
    owner = request[API_KEY].tenant
    found = await read_status(
        config[SCRIPTS],
        config[DB],
        config[SETTINGS],
        page_size,
        cursor,
        None if owner is None else owner.id,
    )
    # Polled every few seconds by dashboards: never a cached answer.
    response = json_response(found)
    response.headers["Cache-Control"] = "no-store"
    return response
