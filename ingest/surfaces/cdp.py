"""The Talon.One Third-party API for customer data platforms (``/cdp``): audiences known by the
CDP's own ids, profiles' audience changes, errors in the API's own shape; the
``destination-hostname`` must name the deployment (tenant) of the key."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import TypeVar

import asyncpg
import msgspec
from aiohttp import web

from ingest import auth, store
from ingest.bodies import JSON, json_response, path_text, read_json
from ingest.errors import (
    ERROR_RENDERER,
    ApiError,
    BadRequest,
    Conflict,
    Handler,
    NotFound,
    Unauthorized,
)
from ingest.services import audiences, changes
from ingest.state import DB, MISS, SETTINGS, TENANT_HOSTNAMES, State, Tenant
from schemas import tenants
from schemas.cdp import (
    MAX_CHANGES,
    CdpAudience,
    CdpAudienceRequest,
    CdpErrorBody,
    ProfilesAudiences,
)
from schemas.talon import Audience, Id, IntegrationId, NewAudience

routes = web.RouteTableDef()

DESTINATION_HOSTNAME = "destination-hostname"
PLATFORM_NAME = "customer-data-platform-name"
# The reference bounds the platform name nowhere; it becomes audiences' ``integration``.
MAX_HEADER_LENGTH = 1000

T = TypeVar("T", int, str)

_audience_request = msgspec.json.Decoder(CdpAudienceRequest)
_by_talon_id = msgspec.json.Decoder(ProfilesAudiences[Id])
_by_cdp_id = msgspec.json.Decoder(ProfilesAudiences[IntegrationId])
_encoder = msgspec.json.Encoder()
# The CDP's name, from its header, lowercased: the ``integration`` of the audiences it creates.
PLATFORM = web.RequestKey("platform", str)


def create_app() -> web.Application:
    """The Third-party API, for keys of scope ``cdp`` (or ``all``), with its headers required."""
    app = web.Application(middlewares=[auth.key_required("cdp"), require_headers])
    app[ERROR_RENDERER] = render_error
    app.router.add_routes(routes)
    return app


def render_error(request: web.Request, error: ApiError) -> web.Response:
    """An error in the Third-party API's shape, ``{StatusCode, Error, RequestUUID}``."""
    body = CdpErrorBody(
        status_code=error.status, error=_describe(error), request_uuid=str(uuid.uuid4())
    )
    return web.Response(
        body=_encoder.encode(body), status=error.status, headers=error.headers, content_type=JSON
    )


def _describe(error: ApiError) -> str:
    # The CDP errors below are one title that says it all; shared ones (validation, auth,
    # backlog) add details and where in the body.
    parts = []
    for item in error.errors:
        # aiohttp's own refusals repeat their title in the details ("404: Not Found").
        repeated = not item.details or item.title in item.details
        text = item.title if repeated else f"{item.title}: {item.details}"
        if item.source.pointer:
            text += f" (at {item.source.pointer})"
        parts.append(text)
    return "; ".join(parts)


@cache
def _allowed(hostnames: str) -> frozenset[str]:
    return frozenset(tenants.hostname(h) for h in hostnames.split(",") if h.strip())


@web.middleware
async def require_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request without the contract's headers or for a deployment other than the
    key's; ``request[PLATFORM]`` is the CDP's name. An unknown path or method is answered 404
    or 405 whatever its headers say."""
    if request.match_info.http_exception is None:
        request[PLATFORM] = await platform_of(request)
    return await handler(request)


async def platform_of(request: web.Request) -> str:
    """The CDP's name from the request's headers, lowercased; ``BadRequest`` when the headers
    are missing or name a deployment this edge does not serve, ``Unauthorized`` when they name
    another deployment than the key's tenant."""
    destination = request.headers.get(DESTINATION_HOSTNAME, "").strip()
    if not destination:
        raise BadRequest("No Deployment URL specified")
    hostname = tenants.hostname(destination)
    if not tenants.is_hostname(hostname):
        raise BadRequest(f"{DESTINATION_HOSTNAME} must be a hostname (or a URL of one)")
    await _check_deployment(request.config_dict, auth.tenant_of(request), destination, hostname)
    platform = request.headers.get(PLATFORM_NAME, "").strip().lower()
    if not platform:
        raise BadRequest("No customer data platform name specified")
    if len(platform) > MAX_HEADER_LENGTH:
        raise BadRequest(f"{PLATFORM_NAME} must be at most {MAX_HEADER_LENGTH} characters")
    return platform


async def _check_deployment(app: State, tenant: Tenant, destination: str, hostname: str) -> None:
    # A tenant's keys call for its own hostname only. The default tenant is named by no real
    # hostname: a single-deployment edge's keys take any hostname it serves
    # (COHORTSYNC_ALLOWED_DESTINATION_HOSTNAMES), as before tenants, but another tenant's.
    if hostname == tenant.hostname:
        return
    if tenant.hostname != tenants.DEFAULT_HOSTNAME:
        raise _unknown_key(hostname)
    allowed = _allowed(app[SETTINGS].allowed_destination_hostnames)
    if allowed and hostname not in allowed:
        raise BadRequest(f"Deployment URL '{destination}' is not served here")
    if await _tenant_named(app, hostname) not in (None, tenant.id):
        raise _unknown_key(hostname)


def _unknown_key(hostname: str) -> Unauthorized:
    # What a deployment answers a key it does not know: nothing says whose key it is.
    return Unauthorized(
        "Invalid API key",
        f"Deployment '{hostname}' knows no such key",
        parameter="Authorization",
    )


async def _tenant_named(app: State, hostname: str) -> int | None:
    cache = app[TENANT_HOSTNAMES]
    now = time.monotonic()
    found = cache.get(hostname, now)
    if found is MISS:
        found = await store.tenant_named(app[DB], hostname)
        # A tenant added a moment ago is known within this, as a new key is.
        cache.put(hostname, found, app[SETTINGS].auth_cache_ttl_s, now)
    return found


def _not_found(ids: Sequence[object]) -> NotFound:
    listed = ", ".join(f"'{i}'" for i in ids)
    if len(ids) == 1:
        return NotFound(f"The audience with the ID {listed} does not exist")
    return NotFound(f"The audiences with the IDs {listed} do not exist")


def _response(audience: Audience) -> CdpAudience:
    return CdpAudience(
        id=audience.id,
        created=audience.created,
        account_id=audience.account_id,
        name=audience.name,
        integration=audience.integration,
        integration_id=audience.integration_id,
    )


async def _find(request: web.Request, tenant: Tenant, integration_id: str) -> asyncpg.Record:
    db = request.config_dict[DB]
    row = await store.live_audience_by_integration(db, tenant.id, request[PLATFORM], integration_id)
    if row is None:
        raise _not_found([integration_id])
    return row


@routes.post("/audiences")
async def create(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    body = await read_json(request, _audience_request)
    new = NewAudience(
        name=body.audience_name,
        integration=request[PLATFORM],
        integration_id=body.audience_id,
        created_in_3rd_party=True,
    )
    try:
        audience = await audiences.create_audience(request.config_dict, tenant, new)
    except Conflict as e:
        raise Conflict(f"The audience with the ID '{body.audience_id}' already exists") from e
    return json_response(_response(audience), status=201)


@routes.put("/audiences/{audienceId}")
async def update(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    integration_id = path_text(request, "audienceId")
    body = await read_json(request, _audience_request)
    if body.audience_id != integration_id:
        raise BadRequest(
            f"audienceId '{body.audience_id}' in the body differs from '{integration_id}' "
            "in the path"
        )
    found = await _find(request, tenant, integration_id)
    audience = await audiences.update_audience(
        request.config_dict, tenant, found["id"], body.audience_name
    )
    if audience is None:
        raise _not_found([integration_id])
    return json_response(_response(audience))


@routes.delete("/audiences/{audienceId}")
async def delete(request: web.Request) -> web.Response:
    tenant = auth.tenant_of(request)
    integration_id = path_text(request, "audienceId")
    found = await _find(request, tenant, integration_id)
    if not await audiences.clear_audience(request.config_dict, tenant, found["id"], delete=True):
        raise _not_found([integration_id])
    return web.Response(status=204)


def _check(body: ProfilesAudiences[T]) -> None:
    total = sum(len(item.adds) + len(item.deletes) for item in body.data)
    if total > MAX_CHANGES:
        raise BadRequest(
            f"The total number of adds and deletes must be at most {MAX_CHANGES}; got {total}"
        )
    for index, item in enumerate(body.data):
        both = set(item.adds).intersection(item.deletes)
        if both:
            raise BadRequest(
                f"customerProfileId '{item.customer_profile_id}' at /data/{index} both joins "
                f"and leaves audience '{min(both)}'"
            )


def _changes(
    body: ProfilesAudiences[T], resolve: Callable[[T], int]
) -> Iterator[tuple[int, str, str]]:
    for item in body.data:
        for ref in item.adds:
            yield resolve(ref), "add", item.customer_profile_id
        for ref in item.deletes:
            yield resolve(ref), "delete", item.customer_profile_id


async def _accept(request: web.Request, accepted: Iterator[tuple[int, str, str]]) -> web.Response:
    try:
        done = await changes.accept_changes(request.config_dict, auth.tenant_of(request), accepted)
    except changes.UnknownAudiences as e:
        raise _not_found(e.audience_ids) from e
    return web.Response(status=204, headers=done.headers())


@routes.put("/customer_profiles/audiences")
async def update_profiles(request: web.Request) -> web.Response:
    """Audiences named by Talon.One's numeric ids."""
    body = await read_json(request, _by_talon_id)
    _check(body)
    return await _accept(request, _changes(body, int))


@routes.put("/v2/customer_profiles/audiences")
async def update_profiles_by_cdp_id(request: web.Request) -> web.Response:
    """Audiences named by the CDP's own ids, as it created them."""
    body = await read_json(request, _by_cdp_id)
    _check(body)
    named = list(dict.fromkeys(r for item in body.data for r in (*item.adds, *item.deletes)))
    db = request.config_dict[DB]
    tenant = auth.tenant_of(request)
    ids = (
        await store.live_audiences_by_integration(db, tenant.id, request[PLATFORM], named)
        if named
        else {}
    )
    missing = [r for r in named if r not in ids]
    if missing:
        raise _not_found(missing)
    return await _accept(request, _changes(body, ids.__getitem__))
