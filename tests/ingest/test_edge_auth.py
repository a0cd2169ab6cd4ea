"""API keys on every surface, probes, and the error shape for whatever goes wrong."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from ingest.app import create_app
from ingest.auth import authenticate
from ingest.errors import Unauthorized
from ingest.state import ApiKey
from schemas.settings import Settings
from tests.support.edge import DEFAULT, Client, auth, create_key, running_edge


@pytest.fixture
async def client(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> AsyncIterator[Client]:
    async with running_edge(settings) as client:
        yield client


REQUESTS = [
    ("POST", "/v2/audiences", {"name": "x"}),
    ("PUT", "/v2/audiences/1", {"name": "x"}),
    ("DELETE", "/v2/audiences/1", None),
    ("DELETE", "/v2/audiences/1/memberships", None),
    (
        "POST",
        "/v2/customer_audiences",
        {"data": [{"action": "add", "profileIntegrationId": "p", "audienceId": 1}]},
    ),
    ("PUT", "/v2/audience_customers/1/attributes", {"a": 1}),
    ("GET", "/v2/authping", None),
    ("GET", "/v1/audiences", None),
    ("GET", "/v1/audiences/1/memberships", None),
    ("GET", "/v1/customer_profiles/p/audiences", None),
    ("POST", "/cdp/audiences", {}),
    ("POST", "/amplitude/cohorts", {}),
]


@pytest.mark.parametrize("case", ["missing", "wrong-scheme", "unknown", "revoked", "empty"])
async def test_refused_keys_are_401_and_touch_nothing(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis, case: str
) -> None:
    await db.execute("INSERT INTO audiences (account_id, name) VALUES (1, 'A')")
    _, good = await create_key(db)
    _, revoked = await create_key(db, revoked=True)
    headers = {
        "missing": {},
        "wrong-scheme": {"Authorization": f"Bearer {good}"},
        "unknown": auth(good + "x"),
        "revoked": auth(revoked),
        "empty": {"Authorization": "ApiKey-v1 "},
    }[case]
    for method, path, body in REQUESTS:
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == 401, (method, path)
        text = await resp.text()
        assert good not in text
        assert revoked not in text
        error = await resp.json()
        assert error["StatusCode"] == 401
        if path.startswith("/cdp/"):
            # The Third-party API's own shape: {StatusCode, Error, RequestUUID}.
            assert error["Error"].startswith("Invalid API key: ")
        else:
            assert error["errors"][0]["source"] == {"parameter": "Authorization"}
    assert await redis.dbsize() == 0
    row = await db.fetchrow("SELECT name, cleared_version, deleted_at FROM audiences")
    assert row is not None
    assert tuple(row) == ("A", 0, None)
    assert await db.fetchval("SELECT count(*) FROM audiences") == 1


async def test_good_key_passes_and_carries_id_and_scope(client: Client, db: asyncpg.Pool) -> None:
    key_id, key = await create_key(db, scope="cdp")
    resp = await client.get("/v2/authping", headers=auth(key))
    assert resp.status == 204
    app = client.app
    assert app is not None
    assert await authenticate(app, f"ApiKey-v1 {key}") == ApiKey(key_id, "cdp", DEFAULT)
    _, everything = await create_key(db)
    assert (await authenticate(app, f"apikey-v1 {everything}")).scope is None


async def test_unknown_key_is_cached_only_briefly(client: Client, db: asyncpg.Pool) -> None:
    app = client.app
    assert app is not None
    with pytest.raises(Unauthorized):
        await authenticate(app, "ApiKey-v1 nope")
    # A revoked key is refused at once when the edge has not seen it yet.
    _, revoked = await create_key(db, revoked=True)
    with pytest.raises(Unauthorized):
        await authenticate(app, f"ApiKey-v1 {revoked}")


async def test_probes_need_no_key(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "checks": {"redis": "ok", "postgres": "ok"}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_readyz_503_when_redis_is_unreachable(settings: Settings, db: asyncpg.Pool) -> None:
    broken = settings.with_changes(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with running_edge(broken) as client:
        assert (await client.get("/healthz")).status == 200
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["redis"].startswith("unreachable")


async def test_readyz_503_when_migrations_are_pending(
    settings: Settings, services: tuple[str, str]
) -> None:
    admin_url = services[0]
    name = f"cohortsync_unmigrated_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
            fresh = settings.with_changes(database_url=url)
            async with running_edge(fresh) as client:
                resp = await client.get("/readyz")
                assert resp.status == 503
                body = await resp.json()
                assert body["checks"]["redis"] == "ok"
                assert body["checks"]["postgres"].startswith("migrations pending: [1, 2")
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_unknown_route_and_wrong_method_use_the_error_shape(
    client: Client, db: asyncpg.Pool
) -> None:
    _, key = await create_key(db)
    resp = await client.get("/v2/nothing-here", headers=auth(key))
    assert resp.status == 404
    assert (await resp.json())["StatusCode"] == 404
    resp = await client.patch("/v2/audiences", headers=auth(key))
    assert resp.status == 405
    assert "POST" in resp.headers["Allow"]
    assert (await resp.json())["StatusCode"] == 405


async def test_unexpected_error_is_500_without_internals(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("connection string postgres://secret@db")

    app = create_app(settings)
    app.router.add_get("/v1/broken", broken)
    _, key = await create_key(db)
    async with running_edge(settings, key, app=app) as client:
        resp = await client.get("/v1/broken")
        assert resp.status == 500
        text = await resp.text()
        assert "secret" not in text
        assert "RuntimeError" not in text
        body = await resp.json()
        assert body["StatusCode"] == 500
        assert body["message"] == "Internal server error"
