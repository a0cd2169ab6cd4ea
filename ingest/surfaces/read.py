"""Read API for the rule engine and operators: audiences, their members, a profile's audiences."""

from __future__ import annotations

import msgspec
from aiohttp import web

from ingest import store
from ingest.audiences import audience_from_row, audience_not_found
from ingest.bodies import json_response, path_id, path_text, query_int
from ingest.state import DB
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

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def _paging(request: web.Request) -> tuple[int, int]:
    page_size = query_int(request, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    skip = query_int(request, "skip", 0, 0, BIGINT_MAX)
    return page_size, skip


@routes.get("/v1/audiences")
async def list_audiences(request: web.Request) -> web.Response:
    page_size, skip = _paging(request)
    total, rows = await store.audience_page(request.app[DB], page_size, skip)
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


@routes.get("/v1/audiences/{audienceId}/memberships")
async def list_members(request: web.Request) -> web.Response:
    audience_id = path_id(request, "audienceId")
    page_size, skip = _paging(request)
    found = await store.member_page(request.app[DB], audience_id, page_size, skip)
    if found is None:
        raise audience_not_found(audience_id)
    total, rows = found
    data = [Member(profile_integration_id=r["profile_id"], updated=r["updated_at"]) for r in rows]
    page = MemberPage(total_result_size=total, has_more=skip + len(data) < total, data=data)
    return json_response(page)


@routes.get("/v1/customer_profiles/{integrationId}/audiences")
async def profile_audiences(request: web.Request) -> web.Response:
    profile_id = path_text(request, "integrationId")
    rows = await store.profile_audiences(request.app[DB], profile_id)
    return json_response(ProfileAudiences([AudienceRef(r["id"], r["name"]) for r in rows]))
