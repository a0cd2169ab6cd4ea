"""Each surface answers in its own way: its key scopes, its error shape and, for /cdp, its headers,
for its routes and for unknown paths and methods under it alike."""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse

from ingest.app import create_app
from schemas.settings import Settings
from tests.support.edge import Client, auth, create_key, served_routes

# Served without a key, on the root application.
OPERATIONS = {"/healthz", "/readyz", "/openapi.json", "/docs", "/metrics", "/dashboard"}
CDP_HEADERS = {"destination-hostname": "x.talon.one", "customer-data-platform-name": "Amplitude"}
# The client sends a key of scope "all" unless a request says otherwise.
NO_KEY = {"Authorization": ""}


async def assert_shape(resp: ClientResponse, status: int, *, cdp: bool) -> dict[str, Any]:
    """The error body of the CDP API ({StatusCode, Error, RequestUUID}) or of the Integration API
    ({message, errors, StatusCode})."""
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    if cdp:
        assert set(body) == {"StatusCode", "Error", "RequestUUID"}
        assert uuid.UUID(body["RequestUUID"]).version == 4
    else:
        assert set(body) == {"StatusCode", "message", "errors"}
    assert body["StatusCode"] == status
    return body


async def test_every_api_route_needs_a_key_and_refuses_in_its_surfaces_shape(
    settings: Settings, client: Client
) -> None:
    routes = [(m, re.sub(r"\{[^}]+\}", "1", p)) for m, p in served_routes(create_app(settings))]
    assert {path for _, path in routes} >= OPERATIONS
    for method, path in routes:
        resp = await client.request(method, path, headers=CDP_HEADERS | NO_KEY)
        if path in OPERATIONS:
            assert resp.status != 401, path
            continue
        body = await assert_shape(resp, 401, cdp=path.startswith("/cdp/"))
        assert "Authorization" in str(body)


# (surface, a path under it that no route serves, a served path and a method it does not take,
# a scope it takes, a scope it refuses, whether its errors take the CDP API's shape)
SURFACES = [
    ("integration", "/v2/nothing", "/v2/audiences", "integration", "read", False),
    ("cdp", "/cdp/nothing", "/cdp/audiences", "cdp", "integration", True),
    ("amplitude", "/amplitude/nothing", "/amplitude/cohorts", "cdp", "read", False),
    ("read", "/v1/nothing", "/v1/audiences", "read", "cdp", False),
]


@pytest.mark.parametrize(
    ("unknown", "path", "scope", "refused", "cdp"),
    [s[1:] for s in SURFACES],
    ids=[s[0] for s in SURFACES],
)
async def test_unknown_paths_and_methods_are_answered_by_their_surface(
    client: Client, db: asyncpg.Pool, unknown: str, path: str, scope: str, refused: str, cdp: bool
) -> None:
    _, key = await create_key(db, scope=scope)
    _, other = await create_key(db, scope=refused)
    # The key first, before the path is found unknown; no CDP headers, which only CDP routes need.
    await assert_shape(await client.get(unknown, headers=NO_KEY), 401, cdp=cdp)
    body = await assert_shape(await client.get(unknown, headers=auth(other)), 403, cdp=cdp)
    assert f"A key with scope '{refused}' may call only" in str(body)
    await assert_shape(await client.get(unknown, headers=auth(key)), 404, cdp=cdp)
    resp = await client.patch(path, headers=auth(key))
    await assert_shape(resp, 405, cdp=cdp)
    assert resp.headers["Allow"]


async def test_cdp_headers_are_checked_on_cdp_routes_after_the_key(
    client: Client, redis: aioredis.Redis
) -> None:
    body: dict[str, list[Any]] = {"data": []}
    cdp_route = "/cdp/customer_profiles/audiences"
    await assert_shape(await client.put(cdp_route, json=body, headers=NO_KEY), 401, cdp=True)
    answer = await assert_shape(await client.put(cdp_route, json=body), 400, cdp=True)
    assert answer["Error"] == "No Deployment URL specified"
    assert (await client.put(cdp_route, json=body, headers=CDP_HEADERS)).status == 204
    # Other surfaces never ask for them.
    assert (await client.post("/v2/customer_audiences", json=body)).status == 204
    assert (await client.get("/v2/authping")).status == 204
    assert await redis.dbsize() == 0
