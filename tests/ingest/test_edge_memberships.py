"""POST /v2/customer_audiences: acceptance into the Redis backlogs, all or nothing."""

from __future__ import annotations

import itertools
import socket
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from ingest.errors import TooManyRequests
from ingest.services.changes import UnknownAudiences, accept_changes
from schemas.settings import Settings
from tests.support.edge import DEFAULT, Client, backlog, redis_int, running_edge
from tests.support.redis_keys import KEYS
from tests.support.worker import new_audience


def action(audience_id: int, profile: str, kind: str = "add") -> dict[str, Any]:
    return {"action": kind, "profileIntegrationId": profile, "audienceId": audience_id}


async def test_accepts_changes_per_audience_in_order(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a, b = await new_audience(db), await new_audience(db)
    data = [
        action(a, "p1"),
        action(b, "p2", "delete"),
        action(a, "id:with:colons", "delete"),
        action(a, "üñí"),
    ]
    resp = await client.post("/v2/customer_audiences", json={"data": data})
    assert resp.status == 204
    assert await resp.read() == b""

    in_a = await backlog(redis, a)
    assert [(kind, p) for kind, p, _ in in_a] == [
        ("add", "p1"),
        ("delete", "id:with:colons"),
        ("add", "üñí"),
    ]
    versions = [v for _, _, v in in_a]
    assert versions == sorted(set(versions))
    assert [(kind, p) for kind, p, _ in await backlog(redis, b)] == [("delete", "p2")]
    assert await redis_int(redis, KEYS.backlog_total) == 4
    assert await redis_int(redis, KEYS.stats(a), "accepted") == 3
    assert await redis_int(redis, KEYS.stats(b), "accepted") == 1


async def test_versions_monotonic_across_requests(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    for i in range(2):
        data = [action(a, f"r{i}-{j}") for j in range(1000)]
        assert (await client.post("/v2/customer_audiences", json={"data": data})).status == 204
    versions = [v for _, _, v in await backlog(redis, a)]
    assert len(versions) == 2000
    assert all(x < y for x, y in itertools.pairwise(versions))


async def test_empty_request_is_accepted_and_enqueues_nothing(
    client: Client, redis: aioredis.Redis
) -> None:
    bodies: list[dict[str, Any]] = [{"data": []}, {}]
    for body in bodies:
        assert (await client.post("/v2/customer_audiences", json=body)).status == 204
    assert await redis.dbsize() == 0


def raw(body: str) -> tuple[bytes, str]:
    return body.encode(), "application/json"


AUDIENCE = 1  # the first audience of a freshly truncated table


@pytest.mark.parametrize(
    ("body", "status", "pointer"),
    [
        pytest.param(raw('{"data": [{"action": "add",'), 400, "", id="malformed-json"),
        pytest.param(raw("not json"), 400, "", id="not-json"),
        pytest.param(
            (
                b'{"data": [{"action": "add", "profileIntegrationId": "\xff", "audienceId": 1}]}',
                "application/json",
            ),
            400,
            "",
            id="invalid-utf8",
        ),
        pytest.param(raw("[]"), 400, "", id="not-an-object"),
        pytest.param(raw('{"data": {}}'), 400, "/data", id="data-not-array"),
        pytest.param(
            raw('{"data": [{"action": "add", "profileIntegrationId": "p", "audienceId": "1"}]}'),
            400,
            "/data/0/audienceId",
            id="audience-id-string",
        ),
        pytest.param(
            raw('{"data": [{"action": "add", "profileIntegrationId": 7, "audienceId": 1}]}'),
            400,
            "/data/0/profileIntegrationId",
            id="profile-id-number",
        ),
        pytest.param(
            raw('{"data": [{"action": "remove", "profileIntegrationId": "p", "audienceId": 1}]}'),
            400,
            "/data/0/action",
            id="unknown-action",
        ),
        pytest.param(
            raw('{"data": [{"profileIntegrationId": "p", "audienceId": 1}]}'),
            400,
            "/data/0/action",
            id="missing-action",
        ),
        pytest.param(
            raw('{"data": [{"action": "add", "profileIntegrationId": "", "audienceId": 1}]}'),
            400,
            "/data/0/profileIntegrationId",
            id="empty-profile-id",
        ),
        pytest.param(
            raw(
                '{"data": [{"action": "add", "profileIntegrationId": "p", "audienceId": 1},'
                ' {"action": "add", "profileIntegrationId": "'
                + "x" * 1001
                + '", "audienceId": 1}]}'
            ),
            400,
            "/data/1/profileIntegrationId",
            id="1001-character-id",
        ),
        pytest.param(
            raw(
                '{"data": [{"action": "add", "profileIntegrationId": "a\\u0000", "audienceId": 1}]}'
            ),
            400,
            "",
            id="nul-in-id",
        ),
        pytest.param(
            raw('{"data": [{"action": "add", "profileIntegrationId": "p", "audienceId": 1e3}]}'),
            400,
            "/data/0/audienceId",
            id="audience-id-float",
        ),
        pytest.param(
            raw(
                '{"data": [{"action": "add", "profileIntegrationId": "p",'
                ' "audienceId": 99999999999999999999}]}'
            ),
            400,
            "/data/0/audienceId",
            id="audience-id-too-large",
        ),
        pytest.param((b'{"data": []}', "text/plain"), 415, None, id="wrong-content-type"),
    ],
)
async def test_bad_input_is_4xx_and_enqueues_nothing(
    client: Client,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    body: tuple[bytes, str],
    status: int,
    pointer: str | None,
) -> None:
    assert await new_audience(db) == AUDIENCE
    payload, content_type = body
    resp = await client.post(
        "/v2/customer_audiences", data=payload, headers={"Content-Type": content_type}
    )
    assert resp.status == status
    error = await resp.json()
    assert error["StatusCode"] == status
    assert isinstance(error["message"], str)
    assert error["errors"][0]["title"]
    if pointer is not None:
        assert error["errors"][0]["source"] == {"pointer": pointer}
    else:
        assert error["errors"][0]["source"] == {"parameter": "Content-Type"}
    assert await redis.dbsize() == 0


async def test_1001_actions_is_400_at_data(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    resp = await client.post(
        "/v2/customer_audiences", json={"data": [action(a, f"p{i}") for i in range(1001)]}
    )
    assert resp.status == 400
    error = await resp.json()
    assert error["errors"][0]["source"] == {"pointer": "/data"}
    assert "1000" in error["errors"][0]["details"]
    assert await redis.dbsize() == 0


async def test_oversized_body_is_413(
    settings: Settings, key: str, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    small = settings.with_changes(max_body_bytes=1024)
    async with running_edge(small, key) as client:
        data = [action(a, f"profile-{i}") for i in range(100)]
        resp = await client.post("/v2/customer_audiences", json={"data": data})
        assert resp.status == 413
        error = await resp.json()
        assert error["StatusCode"] == 413
        assert error["errors"][0]["title"]
    assert await redis.dbsize() == 0


async def test_unknown_or_deleted_audience_is_404_naming_it(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    live = await new_audience(db)
    deleted = await new_audience(db)
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", deleted)
    data = [action(live, "p1"), action(4242, "p2"), action(deleted, "p3"), action(4242, "p4")]
    resp = await client.post("/v2/customer_audiences", json={"data": data})
    assert resp.status == 404
    error = await resp.json()
    assert error["StatusCode"] == 404
    found = {(e["source"]["pointer"], e["details"]) for e in error["errors"]}
    assert found == {
        ("/data/1/audienceId", "Audience 4242 does not exist or was deleted"),
        ("/data/2/audienceId", f"Audience {deleted} does not exist or was deleted"),
    }
    assert await redis.dbsize() == 0


async def test_backlog_bound_is_429_with_retry_after(
    settings: Settings, key: str, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    bounded = settings.with_changes(max_backlog=5)
    async with running_edge(bounded, key) as client:
        first = [action(a, f"p{i}") for i in range(4)]
        assert (await client.post("/v2/customer_audiences", json={"data": first})).status == 204
        more = [action(a, "q1"), action(a, "q2")]
        resp = await client.post("/v2/customer_audiences", json={"data": more})
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        error = await resp.json()
        assert error["StatusCode"] == 429
        assert error["errors"][0]["source"] == {"pointer": "/data"}
        # Nothing of the refused request was enqueued; what fits still goes in.
        assert [p for _, p, _ in await backlog(redis, a)] == ["p0", "p1", "p2", "p3"]
        assert await redis_int(redis, KEYS.backlog_total) == 4
        resp = await client.post("/v2/customer_audiences", json={"data": more[:1]})
        assert resp.status == 204


async def test_accept_changes_for_other_surfaces(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    app = client.app
    assert app is not None
    a = await new_audience(db)
    accepted = await accept_changes(app, DEFAULT, [(a, "add", "u1"), (a, "delete", "u2")])
    # At most how long until applied: the tenant's 2 pending at the edge's 1000/min.
    assert accepted == (2, 0.1)
    assert [(k, p) for k, p, _ in await backlog(redis, a)] == [("add", "u1"), ("delete", "u2")]
    with pytest.raises(UnknownAudiences) as unknown:
        await accept_changes(app, DEFAULT, [(a, "add", "u3"), (777, "add", "u4")])
    assert unknown.value.audience_ids == [777]
    assert len(await backlog(redis, a)) == 2
    assert await accept_changes(app, DEFAULT, []) == (0, 0.0)


async def test_accept_changes_refuses_past_the_bound(
    settings: Settings, key: str, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    async with running_edge(settings.with_changes(max_backlog=1), key) as client:
        assert client.app is not None
        with pytest.raises(TooManyRequests):
            await accept_changes(client.app, DEFAULT, [(a, "add", "u1"), (a, "add", "u2")])
    assert await redis.dbsize() == 0


async def test_accept_survives_redis_forgetting_its_scripts(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    # As after a Redis restart: EVALSHA fails, the client loads the script ("SCRIPT LOAD").
    a = await new_audience(db)
    await redis.script_flush()
    resp = await client.post("/v2/customer_audiences", json={"data": [action(a, "p1")]})
    assert resp.status == 204
    assert [p for _, p, _ in await backlog(redis, a)] == ["p1"]


async def test_redis_down_is_503_with_retry_after(
    settings: Settings, key: str, db: asyncpg.Pool
) -> None:
    a = await new_audience(db)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    broken = settings.with_changes(redis_url=f"redis://127.0.0.1:{closed_port}/0")
    async with running_edge(broken, key) as client:
        resp = await client.post("/v2/customer_audiences", json={"data": [action(a, "p1")]})
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["StatusCode"] == 503
        # A clear takes its version from Redis first: refused before Postgres changes.
        resp = await client.delete(f"/v2/audiences/{a}/memberships")
        assert resp.status == 503
    assert await db.fetchval("SELECT cleared_version FROM audiences WHERE id = $1", a) == 0
