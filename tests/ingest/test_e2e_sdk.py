"""The official Talon.One Python SDK against a running edge, workers draining into Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
import talon_one
from aiohttp import web
from talon_one.models.customer_profile_audience_request import CustomerProfileAudienceRequest
from talon_one.models.customer_profile_audience_request_item import (
    CustomerProfileAudienceRequestItem,
)
from talon_one.models.new_audience import NewAudience
from talon_one.models.update_audience import UpdateAudience

from ingest.app import create_app
from schemas.apikeys import hash_key, new_key, shown_part
from schemas.settings import Settings
from tests.support.redis_keys import KEYS
from tests.support.worker import sweep_all
from worker.drain import run_until_drained

T = TypeVar("T")


class Edge:
    """An edge listening on a real port, an SDK client and a raw HTTP client for the read API."""

    def __init__(self, url: str, key: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.key = key
        self.http = http
        config = talon_one.Configuration(host=url)
        config.api_key["api_key_v1"] = key
        config.api_key_prefix["api_key_v1"] = "ApiKey-v1"
        self.sdk = talon_one.IntegrationApi(talon_one.ApiClient(config))

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        # The SDK is synchronous; keep the event loop (and the edge on it) free.
        return await asyncio.to_thread(fn, *args)

    async def get(self, path: str) -> Any:
        headers = {"Authorization": f"ApiKey-v1 {self.key}"}
        async with self.http.get(self.url + path, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.fixture
async def edge(settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis) -> AsyncIterator[Edge]:
    key = new_key()
    await db.execute(
        "INSERT INTO api_keys (name, key_hash, key_prefix) VALUES ('sdk', $1, $2)",
        hash_key(key),
        shown_part(key),
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as http:
        yield Edge(f"http://127.0.0.1:{port}", key, http)
    await runner.cleanup()


async def members(edge: Edge, audience_id: int) -> set[str]:
    found: set[str] = set()
    skip = 0
    while True:
        page = await edge.get(f"/v1/audiences/{audience_id}/memberships?pageSize=1000&skip={skip}")
        found.update(m["profileIntegrationId"] for m in page["data"])
        if not page["hasMore"]:
            return found
        skip += len(page["data"])


async def stored_members(db: asyncpg.Pool, audience_id: int) -> set[str]:
    rows = await db.fetch(
        "SELECT profile_id FROM current_memberships WHERE audience_id = $1",
        audience_id,
    )
    return {r["profile_id"] for r in rows}


async def listed(edge: Edge, audience_id: int) -> dict[str, Any] | None:
    page = await edge.get("/v1/audiences?pageSize=1000")
    return next((a for a in page["data"] if a["id"] == audience_id), None)


def actions(action: str, profiles: list[str], audience_id: int) -> CustomerProfileAudienceRequest:
    return CustomerProfileAudienceRequest(
        data=[
            CustomerProfileAudienceRequestItem(
                action=action, profileIntegrationId=p, audienceId=audience_id
            )
            for p in profiles
        ]
    )


async def test_sdk_audience_lifecycle(
    edge: Edge, settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    unlimited = settings.with_changes(rate_limit_per_minute=0)
    created = await edge.call(
        edge.sdk.create_audience_v2,
        NewAudience(name="Season 1 bingers", integration="amplitude", integrationId="c-42"),
    )
    assert created.name == "Season 1 bingers"
    assert created.integration_id == "c-42"
    entry = await listed(edge, created.id)
    assert entry is not None
    assert entry["membersCount"] == 0  # visible before any member is applied

    profiles = [f"user-{i:04d}" for i in range(1000)]
    await edge.call(
        edge.sdk.update_customer_profile_audiences, actions("add", profiles, created.id)
    )
    assert await redis.llen(KEYS.backlog(created.id)) == 1000  # type: ignore[misc]
    await run_until_drained(unlimited, timeout_s=90)
    assert await members(edge, created.id) == set(profiles)
    assert await stored_members(db, created.id) == set(profiles)
    entry = await listed(edge, created.id)
    assert entry is not None
    assert entry["membersCount"] == 1000
    lookup = await edge.get("/v1/customer_profiles/user-0007/audiences")
    assert [(a["id"], a["name"]) for a in lookup["data"]] == [(created.id, "Season 1 bingers")]

    gone = profiles[:100]
    await edge.call(edge.sdk.update_customer_profile_audiences, actions("delete", gone, created.id))
    await run_until_drained(unlimited, timeout_s=60)
    assert await members(edge, created.id) == set(profiles[100:])
    assert await stored_members(db, created.id) == set(profiles[100:])
    assert (await edge.get("/v1/customer_profiles/user-0007/audiences"))["data"] == []

    renamed = await edge.call(
        edge.sdk.update_audience_v2, created.id, UpdateAudience(name="Season 1 finishers")
    )
    assert renamed.name == "Season 1 finishers"
    entry = await listed(edge, created.id)
    assert entry is not None
    assert entry["name"] == "Season 1 finishers"

    # Queue adds, then clear before they are applied: the clear supersedes them.
    await edge.call(
        edge.sdk.update_customer_profile_audiences, actions("add", ["late"], created.id)
    )
    await edge.call(edge.sdk.delete_audience_memberships_v2, created.id)
    assert await members(edge, created.id) == set()
    await run_until_drained(unlimited, timeout_s=60)
    assert await members(edge, created.id) == set()
    assert await stored_members(db, created.id) == set()
    entry = await listed(edge, created.id)
    assert entry is not None
    assert entry["membersCount"] == 0

    # Members after the clear count again; deleting the audience removes everything.
    await edge.call(
        edge.sdk.update_customer_profile_audiences, actions("add", ["back"], created.id)
    )
    await run_until_drained(unlimited, timeout_s=60)
    assert await members(edge, created.id) == {"back"}
    await edge.call(edge.sdk.delete_audience_v2, created.id)
    assert await listed(edge, created.id) is None
    await sweep_all(db)
    count = await db.fetchval("SELECT count(*) FROM memberships WHERE audience_id = $1", created.id)
    assert count == 0
    with pytest.raises(talon_one.ApiException) as err:
        await edge.call(
            edge.sdk.update_customer_profile_audiences, actions("add", ["x"], created.id)
        )
    assert err.value.status == 404
