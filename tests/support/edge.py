"""Running the edge in-process for tests, and API keys to call it with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import cast

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin.api_keys import insert_key, revoke_key
from ingest.app import create_app
from ingest.bodies import MAX_REQUEST_LINE_BYTES
from ingest.state import Tenant
from schemas import keys
from schemas.keys import DEFAULT_TENANT
from schemas.settings import Settings
from schemas.tenants import DEFAULT_HOSTNAME
from tests.support.redis_keys import KEYS

Client = TestClient[web.Request, web.Application]

# The tenant that the tests' keys belong to unless they say otherwise, as the ``db`` fixture
# leaves it (the tests' COHORTSYNC_ACCOUNT_ID is the default, 1).
DEFAULT = Tenant(DEFAULT_TENANT, DEFAULT_HOSTNAME, 1)


async def create_key(
    db: asyncpg.Pool,
    *,
    scope: str | None = None,
    revoked: bool = False,
    tenant: int | None = DEFAULT_TENANT,
) -> tuple[int, str]:
    """(id, key) of a key of ``tenant`` stored by the admin command's own code."""
    created = await insert_key(db, "test", scope, tenant)
    if revoked:
        await revoke_key(db, created.id)
    return created.id, created.key


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route ``app`` serves, its sub-applications' included."""
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD" and path:
            found.add((route.method.lower(), path))
    return found


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"ApiKey-v1 {key}"}


@asynccontextmanager
async def running_edge(
    settings: Settings, key: str | None = None, app: web.Application | None = None
) -> AsyncIterator[Client]:
    """A test client on a real port, sending ``key`` with every request when given."""
    server = TestServer(app or create_app(settings))
    # The runner's options go to start_server (TestServer's constructor drops them), as
    # cohortsync-edge passes them to run_app.
    await server.start_server(max_line_size=MAX_REQUEST_LINE_BYTES)
    client = TestClient(server, headers=auth(key) if key else None)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


# redis-py types its asyncio commands as "Awaitable[T] | T"; these say what a test reads.
async def backlog(redis: aioredis.Redis, audience_id: int) -> list[tuple[str, str, int]]:
    """The audience's queued changes as (action, profile id, version)."""
    raw = await cast(Awaitable[list[bytes]], redis.lrange(KEYS.backlog(audience_id), 0, -1))
    return [keys.decode_entry(e.decode()) for e in raw]


async def redis_int(redis: aioredis.Redis, key: str, field: str | None = None) -> int | None:
    """An integer string or hash field, None when absent."""
    if field is None:
        value = await cast(Awaitable[bytes | None], redis.get(key))
    else:
        value = await cast(Awaitable[bytes | None], redis.hget(key, field))
    return None if value is None else int(value)
