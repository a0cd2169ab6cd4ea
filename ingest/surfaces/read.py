"""The read API (``/v1``) for the rule engine and operators: audiences, their members, a profile's
audiences and attributes, and the queue's status."""

from __future__ import annotations

import msgspec
from aiohttp import web

from core.snapshot import read_status
from ingest import auth, profiles, store
from ingest.bodies import json_response, path_id, path_text, query_int
from ingest.errors import ERROR_RENDERER, render_talon
from ingest.services.audiences import audience_from_row, audience_not_found
from ingest.state import DB, SCRIPTS, SETTINGS
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
    """The read API, for keys of scope ``read`` (or ``all``); on the operations port only
    ``/v1/status`` (``status_only``)."""
    app = web.Application(middlewares=[auth.key_required("read")])
    app[ERROR_RENDERER] = render_talon
    if not status_only:
        app.router.add_routes(routes)
    app.router.add_routes(status_routes)
    return app


def _paging(request: web.Request) -> tuple[int, int]:
    page_size = query_int(request, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    skip = query_int(request, "skip", 0, 0, BIGINT_MAX)
    return page_size, skip


@routes.get("/audiences")
async def list_audiences(request: web.Request) -> web.Response:
    page_size, skip = _paging(request)
    total, rows = await store.audience_page(request.config_dict[DB], page_size, skip)
    data = [
        AudienceWithCount(
            **msgspec.structs.asdict(audience_from_row(row)),
            members_count=row["members_count"],
            attributes=msgspec.Raw(row["attributes"]) if row["attributes"] is not None else None,
        )
        for row in rows
    ]
    page = AudiencePage(total_result_size=total, has_more=skip + len(data) < total, data=data)
    return json_response(page)


@routes.get("/audiences/{audienceId}/memberships")
async def list_members(request: web.Request) -> web.Response:
    audience_id = path_id(request, "audienceId")
    page_size, skip = _paging(request)
    found = await store.member_page(request.config_dict[DB], audience_id, page_size, skip)
    if found is None:
        raise audience_not_found(audience_id)
    total, rows = found
    data = [Member(profile_integration_id=r["profile_id"], updated=r["updated_at"]) for r in rows]
    page = MemberPage(total_result_size=total, has_more=skip + len(data) < total, data=data)
    return json_response(page)


@routes.get("/customer_profiles/{integrationId}/audiences")
async def profile_audiences(request: web.Request) -> web.Response:
    profile_id = path_text(request, "integrationId")
    rows = await store.profile_audiences(request.config_dict[DB], profile_id)
    return json_response(ProfileAudiences([AudienceRef(r["id"], r["name"]) for r in rows]))


@routes.get("/customer_profiles/{integrationId}/attributes")
async def profile_attributes(request: web.Request) -> web.Response:
    profile_id = path_text(request, "integrationId")
    return json_response(await profiles.read_attributes(request.config_dict[DB], profile_id))


@status_routes.get("/status")
async def get_status(request: web.Request) -> web.Response:
    config = request.config_dict
    found = await read_status(config[SCRIPTS], config[DB], config[SETTINGS])
    # Polled every few seconds by dashboards: never a cached answer.
    response = json_response(found)
    response.headers["Cache-Control"] = "no-store"
    return response
