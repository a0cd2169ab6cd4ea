"""Amplitude's cohort webhook: first sight, rename, enter, exit, duplicates, limits, bad bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

import asyncpg
import pytest
import redis.asyncio as aioredis

from schemas import keys
from schemas.settings import Settings
from tests.support.edge import Client, backlog, redis_int, running_edge
from tests.support.redis_keys import KEYS
from worker.drain import run_until_drained

# Amplitude's example bodies (reference/amplitude/).
ENTER: dict[str, Any] = {
    "cohort_name": "Finished season 1 within 24h of sign-up",
    "cohort_id": "5x9k2qw",
    "in_cohort": True,
    "computed_time": "1764340000",
    "message_id": "3f0c2a6e-8d1b-4f5a-9c7e-2b4d6e8f0a1c::enter::0",
    "users": [
        {"user_id": "viewer-000001", "user_properties": {"country": "DE", "plan": "premium"}},
        {"user_id": "viewer-000002", "user_properties": {"country": "US"}},
        {"user_id": "viewer-000003"},
    ],
}
EXIT: dict[str, Any] = {
    "cohort_name": "Finished season 1 within 24h of sign-up",
    "cohort_id": "5x9k2qw",
    "in_cohort": False,
    "computed_time": "1764343600",
    "message_id": "3f0c2a6e-8d1b-4f5a-9c7e-2b4d6e8f0a1c::exit::0",
    "users": [{"user_id": "viewer-000002"}],
}
PATH = "/amplitude/cohorts"


def batch(message_id: str, users: list[Any], **fields: Any) -> dict[str, Any]:
    return {**ENTER, "message_id": message_id, "users": users, **fields}


async def post(client: Client, body: Any) -> Any:
    resp = await client.post(PATH, json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def audiences(db: asyncpg.Pool) -> list[tuple[int, str, str, str, bool]]:
    rows = await db.fetch(
        """SELECT id, name, integration, integration_id, created_in_3rd_party FROM audiences
           WHERE deleted_at IS NULL ORDER BY id"""
    )
    return [tuple(r) for r in rows]


async def attributes(client: Client, profile_id: str) -> Any:
    resp = await client.get(f"/v1/customer_profiles/{profile_id}/attributes")
    assert resp.status == 200
    return await resp.json()


async def members(client: Client, audience_id: int) -> list[str]:
    resp = await client.get(f"/v1/audiences/{audience_id}/memberships?pageSize=1000")
    assert resp.status == 200
    return [m["profileIntegrationId"] for m in (await resp.json())["data"]]


async def test_first_sight_creates_the_audience_and_enqueues_adds(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    # At most how long until applied: the tenant's 3 pending at the edge's 1000/min.
    assert await post(client, ENTER) == {
        "audienceId": 1,
        "accepted": 3,
        "duplicate": False,
        "etaSeconds": 0.2,
    }
    assert await audiences(db) == [
        (1, ENTER["cohort_name"], "amplitude", "5x9k2qw", True),
    ]
    assert [(k, p) for k, p, _ in await backlog(redis, 1)] == [
        ("add", "viewer-000001"),
        ("add", "viewer-000002"),
        ("add", "viewer-000003"),
    ]
    # Visible to the read API at once, before any member is applied.
    listed = await (await client.get("/v1/audiences")).json()
    assert [(a["integrationId"], a["membersCount"]) for a in listed["data"]] == [("5x9k2qw", 0)]


async def test_enter_then_exit_ends_in_the_cohort(
    settings: Settings, client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    await post(client, ENTER)
    # 4 pending now, this batch's among them.
    assert await post(client, EXIT) == {
        "audienceId": 1,
        "accepted": 1,
        "duplicate": False,
        "etaSeconds": 0.2,
    }
    assert [(k, p) for k, p, _ in await backlog(redis, 1)][-1] == ("delete", "viewer-000002")
    await run_until_drained(settings.with_changes(rate_limit_per_minute=0))
    assert await members(client, 1) == ["viewer-000001", "viewer-000003"]
    resp = await client.get("/v1/customer_profiles/viewer-000002/audiences")
    assert (await resp.json())["data"] == []


async def test_rename_follows_the_cohort_name(client: Client, db: asyncpg.Pool) -> None:
    await post(client, ENTER)
    renamed = batch("m-2", [{"user_id": "viewer-000004"}], cohort_name="Binge watchers")
    assert (await post(client, renamed))["audienceId"] == 1
    assert await audiences(db) == [(1, "Binge watchers", "amplitude", "5x9k2qw", True)]


async def test_repeated_message_id_is_200_and_enqueues_nothing(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    await post(client, ENTER)
    # A retry of that batch arrives after the cohort was renamed and a user's properties
    # changed: it must undo neither.
    newer = [{"user_id": "viewer-000001", "user_properties": {"plan": "free"}}]
    await post(client, batch("m-2", newer, cohort_name="New name"))
    before = await backlog(redis, 1)
    assert await post(client, ENTER) == {"audienceId": 1, "accepted": 0, "duplicate": True}
    assert await backlog(redis, 1) == before
    assert await redis_int(redis, KEYS.backlog_total) == 4
    assert await audiences(db) == [(1, "New name", "amplitude", "5x9k2qw", True)]
    assert (await attributes(client, "viewer-000001"))["attributes"] == {
        "country": "DE",
        "plan": "free",
    }
    ttl_s = await cast(Awaitable[int], redis.ttl(KEYS.tenant(1).seen(ENTER["message_id"])))
    assert keys.SEEN_TTL_S - 60 < ttl_s <= keys.SEEN_TTL_S == 7 * 24 * 3600


async def test_concurrent_copies_of_a_batch_are_accepted_once(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    users = [{"user_id": f"u{i}"} for i in range(500)]
    answers = await asyncio.gather(*(post(client, batch("same", users)) for _ in range(8)))
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 7
    assert sum(a["accepted"] for a in answers) == 500
    assert len(await backlog(redis, 1)) == 500
    assert len(await audiences(db)) == 1


async def test_first_sync_in_parallel_batches_creates_one_audience(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    bodies = [batch(f"m-{b}", [{"user_id": f"u{b}-{i}"} for i in range(100)]) for b in range(4)]
    answers = await asyncio.gather(*(post(client, body) for body in bodies))
    assert {a["audienceId"] for a in answers} == {1}
    assert len(await audiences(db)) == 1
    assert len(await backlog(redis, 1)) == 400


async def test_ten_thousand_users_in_one_batch(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    users = [{"user_id": f"viewer-{i:06d}", "user_properties": {"n": i}} for i in range(10_000)]
    answer = await post(client, batch("big", users))
    assert answer == {"audienceId": 1, "accepted": 10_000, "duplicate": False, "etaSeconds": 600}
    assert await redis_int(redis, KEYS.backlog_total) == 10_000
    assert await db.fetchval("SELECT count(*) FROM profile_attributes") == 10_000
    assert (await attributes(client, "viewer-009999"))["attributes"] == {"n": 9999}


async def test_more_than_ten_thousand_users_is_400_and_changes_nothing(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    users = [{"user_id": f"viewer-{i:06d}", "user_properties": {"n": i}} for i in range(10_001)]
    resp = await client.post(PATH, json=batch("too-big", users))
    assert resp.status == 400
    assert await resp.json() == {
        "message": "Bad request",
        "errors": [
            {
                "title": "Invalid request body",
                "details": "Expected `array` of length <= 10000",
                "source": {"pointer": "/users"},
            }
        ],
        "StatusCode": 400,
    }
    assert await redis.dbsize() == 0
    assert await audiences(db) == []
    assert await db.fetchval("SELECT count(*) FROM profile_attributes") == 0


def _without(field: str) -> dict[str, Any]:
    return {k: v for k, v in ENTER.items() if k != field}


@pytest.mark.parametrize(
    ("body", "details", "pointer"),
    [
        pytest.param(b'{"cohort_id": ', "Input data was truncated", "", id="truncated"),
        pytest.param([], "Expected `object`, got `array`", "", id="not-an-object"),
        pytest.param(
            _without("cohort_id"),
            "Object missing required field `cohort_id`",
            "/cohort_id",
            id="no-cohort-id",
        ),
        pytest.param(
            _without("message_id"),
            "Object missing required field `message_id`",
            "/message_id",
            id="no-message-id",
        ),
        pytest.param(
            _without("users"), "Object missing required field `users`", "/users", id="no-users"
        ),
        pytest.param(
            {**ENTER, "in_cohort": "true"},
            "Expected `bool`, got `str`",
            "/in_cohort",
            id="in-cohort-string",
        ),
        pytest.param(
            {**ENTER, "cohort_name": ""},
            "Expected `str` of length >= 1",
            "/cohort_name",
            id="empty-name",
        ),
        pytest.param(
            {**ENTER, "cohort_id": 42}, "Expected `str`, got `int`", "/cohort_id", id="numeric-id"
        ),
        pytest.param(
            {**ENTER, "users": [{"user_id": "a"}, {"user_id": ""}]},
            "Expected `str` of length >= 1",
            "/users/1/user_id",
            id="empty-user-id",
        ),
        pytest.param(
            {**ENTER, "users": [{"user_id": "a"}, {"user_properties": {}}]},
            "Object missing required field `user_id`",
            "/users/1/user_id",
            id="no-user-id",
        ),
        pytest.param(
            {**ENTER, "users": [{"user_id": "u" * 1001}]},
            "Expected `str` of length <= 1000",
            "/users/0/user_id",
            id="user-id-too-long",
        ),
        pytest.param(
            {**ENTER, "users": [{"user_id": "a", "user_properties": ["DE"]}]},
            "Expected `object` or `null`",
            "/users/0/user_properties",
            id="properties-not-object",
        ),
        pytest.param(
            {**ENTER, "users": [{"user_id": "a", "user_properties": "DE"}]},
            "Expected `object` or `null`",
            "/users/0/user_properties",
            id="properties-string",
        ),
    ],
)
async def test_malformed_bodies_are_400_and_change_nothing(
    client: Client,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    body: Any,
    details: str,
    pointer: str,
) -> None:
    if isinstance(body, bytes):
        resp = await client.post(PATH, data=body, headers={"Content-Type": "application/json"})
        title = "Malformed JSON"
    else:
        resp = await client.post(PATH, json=body)
        title = "Invalid request body"
    assert resp.status == 400
    error = await resp.json()
    assert error == {
        "message": "Bad request",
        "errors": [{"title": title, "details": details, "source": {"pointer": pointer}}],
        "StatusCode": 400,
    }
    assert await redis.dbsize() == 0
    assert await audiences(db) == []
    assert await db.fetchval("SELECT count(*) FROM profile_attributes") == 0


async def test_properties_postgres_cannot_hold_are_400(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    body = b'{"cohort_name": "c", "cohort_id": "c", "in_cohort": true, "message_id": "m",'
    body += b' "users": [{"user_id": "a", "user_properties": {"n": 1e1000000}}]}'
    resp = await client.post(PATH, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = (await resp.json())["errors"][0]
    assert (error["title"], error["source"]) == ("Invalid request body", {"pointer": "/users"})
    assert error["details"].startswith("user_properties cannot be stored: ")
    assert await redis.dbsize() == 0
    assert await db.fetchval("SELECT count(*) FROM profile_attributes") == 0


async def test_other_content_type_is_415(client: Client, redis: aioredis.Redis) -> None:
    resp = await client.post(PATH, data=b"cohort_id=x", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert await redis.dbsize() == 0


async def test_latest_property_value_wins_merged_with_audience_attributes(
    settings: Settings, client: Client
) -> None:
    await post(client, ENTER)
    later = batch(
        "m-2",
        [
            {"user_id": "viewer-000001", "user_properties": {"plan": "free", "age": 30}},
            {"user_id": "viewer-000001", "user_properties": {"plan": "basic"}},
            {"user_id": "viewer-000002", "user_properties": None},
            {"user_id": "viewer-000003", "user_properties": {}},
        ],
        cohort_id="other",
    )
    assert (await post(client, later))["accepted"] == 3
    resp = await client.put("/v2/audience_customers/1/attributes", json={"tier": "gold"})
    assert resp.status == 204
    await run_until_drained(settings.with_changes(rate_limit_per_minute=0))

    # The same user twice in one batch: the later value of an attribute counts.
    one = await attributes(client, "viewer-000001")
    assert one["integrationId"] == "viewer-000001"
    assert one["attributes"] == {"country": "DE", "plan": "basic", "age": 30, "tier": "gold"}
    assert one["updated"] is not None
    # A null or empty user_properties leaves what is stored.
    assert (await attributes(client, "viewer-000002"))["attributes"] == {
        "country": "US",
        "tier": "gold",
    }
    three = await attributes(client, "viewer-000003")
    assert three["attributes"] == {"tier": "gold"}
    assert "updated" not in three
    assert await attributes(client, "nobody") == {"integrationId": "nobody", "attributes": {}}
    resp = await client.get(f"/v1/customer_profiles/{'x' * 1001}/attributes")
    assert resp.status == 400


async def test_backlog_full_is_429_and_the_retry_is_accepted(
    settings: Settings, db: asyncpg.Pool, key: str, redis: aioredis.Redis
) -> None:
    async with running_edge(settings.with_changes(max_backlog=2), key) as client:
        resp = await client.post(PATH, json=ENTER)
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert await redis.exists(KEYS.tenant(1).seen(ENTER["message_id"])) == 0
        assert await backlog(redis, 1) == []
    async with running_edge(settings, key) as client:
        assert (await post(client, ENTER))["accepted"] == 3


async def test_empty_batch_creates_the_audience_and_is_remembered(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    assert await post(client, batch("empty", [])) == {
        "audienceId": 1,
        "accepted": 0,
        "duplicate": False,
        "etaSeconds": 0,
    }
    assert len(await audiences(db)) == 1
    assert await post(client, batch("empty", [])) == {
        "audienceId": 1,
        "accepted": 0,
        "duplicate": True,
    }
    assert await backlog(redis, 1) == []
    assert await redis.scard(KEYS.tenant(1).active_set) == 0  # type: ignore[misc]
