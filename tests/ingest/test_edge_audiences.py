"""Integration API audience endpoints: create, rename, delete, clear, attributes, authping."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
import talon_one
from talon_one.models.new_audience import NewAudience
from talon_one.models.update_audience import UpdateAudience

from tests.support.edge import Client, backlog, redis_int
from tests.support.redis_keys import KEYS
from tests.support.worker import current_count, sweep_all


async def create(client: Client, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v2/audiences", json=body)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


def is_utc_timestamp(value: str) -> bool:
    return value.endswith("Z") and datetime.fromisoformat(value).utcoffset() is not None


async def test_create_minimal_audience(client: Client, db: asyncpg.Pool) -> None:
    resp = await client.post("/v2/audiences", json={"name": "Bingers"})
    assert resp.status == 201
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"accountId", "id", "created", "name"}  # unset fields are left out
    assert body["accountId"] == 1
    assert body["name"] == "Bingers"
    assert is_utc_timestamp(body["created"])
    row = await db.fetchrow("SELECT name, deleted_at FROM audiences WHERE id = $1", body["id"])
    assert row is not None
    assert (row["name"], row["deleted_at"]) == ("Bingers", None)


async def test_create_full_audience_echoes_every_field(client: Client) -> None:
    full = {
        "name": "Travel audience",
        "sandbox": True,
        "description": "Travel audience 18-27",
        "subscribedApplicationsIds": [3, 13],
        "integration": "mparticle",
        "integrationId": "382370BKDB946",
        "createdIn3rdParty": False,
        "lastUpdate": "2022-04-26T11:02:38Z",
    }
    body = await create(client, **full)
    assert {k: body[k] for k in full} == full
    assert set(body) == {*full, "accountId", "id", "created"}


async def test_duplicate_integration_id_is_409_until_deleted(client: Client) -> None:
    first = await create(client, name="A", integration="amplitude", integrationId="c-1")
    resp = await client.post(
        "/v2/audiences", json={"name": "B", "integration": "amplitude", "integrationId": "c-1"}
    )
    assert resp.status == 409
    body = await resp.json()
    assert body["StatusCode"] == 409
    assert body["errors"][0]["source"] == {"pointer": "/integrationId"}
    # Another integration may use the same id; a deleted audience frees it.
    await create(client, name="C", integration="segment", integrationId="c-1")
    assert (await client.delete(f"/v2/audiences/{first['id']}")).status == 204
    await create(client, name="D", integration="amplitude", integrationId="c-1")


async def test_rename(client: Client, db: asyncpg.Pool) -> None:
    audience = await create(client, name="Old", integrationId="x-1")
    resp = await client.put(
        f"/v2/audiences/{audience['id']}", json={"name": "New", "subscribedApplicationsIds": [7]}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body == {**audience, "name": "New", "subscribedApplicationsIds": [7]}
    assert await db.fetchval("SELECT name FROM audiences WHERE id = $1", audience["id"]) == "New"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v2/audiences/{id}", {"name": "x"}),
        ("DELETE", "/v2/audiences/{id}", None),
        ("DELETE", "/v2/audiences/{id}/memberships", None),
        ("PUT", "/v2/audience_customers/{id}/attributes", {"a": 1}),
    ],
)
async def test_unknown_or_deleted_audience_is_404(
    client: Client, redis: aioredis.Redis, method: str, path: str, body: dict[str, Any] | None
) -> None:
    deleted = await create(client, name="Gone")
    assert (await client.delete(f"/v2/audiences/{deleted['id']}")).status == 204
    await redis.flushdb()
    for audience_id in (deleted["id"], 999999):
        resp = await client.request(method, path.format(id=audience_id), json=body)
        assert resp.status == 404
        error = await resp.json()
        assert error["StatusCode"] == 404
        assert error["errors"][0]["source"] == {"parameter": "audienceId"}
        assert str(audience_id) in error["errors"][0]["details"]
    assert await redis.dbsize() == 0  # no version was taken for an unknown audience


@pytest.mark.parametrize("raw_id", ["abc", "1.5", "-3", "0", "99999999999999999999"])
async def test_non_integer_path_id_is_400(client: Client, raw_id: str) -> None:
    for method, path in [
        ("PUT", f"/v2/audiences/{raw_id}"),
        ("DELETE", f"/v2/audiences/{raw_id}"),
        ("DELETE", f"/v2/audiences/{raw_id}/memberships"),
        ("PUT", f"/v2/audience_customers/{raw_id}/attributes"),
    ]:
        resp = await client.request(method, path, json={"name": "x"})
        assert resp.status == 400, (method, path)
        error = await resp.json()
        assert error["errors"][0]["source"] == {"parameter": "audienceId"}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({}, "/name"),
        ({"name": ""}, "/name"),
        ({"name": 5}, "/name"),
        ({"name": "x", "integrationId": ""}, "/integrationId"),
        ({"name": "x", "integrationId": "i" * 1001}, "/integrationId"),
        ({"name": "x", "subscribedApplicationsIds": [1, "2"]}, "/subscribedApplicationsIds/1"),
        ({"name": "x", "subscribedApplicationsIds": [3, 3]}, "/subscribedApplicationsIds"),
        ({"name": "x", "lastUpdate": "yesterday"}, "/lastUpdate"),
        ([], ""),
    ],
)
async def test_invalid_create_body_is_400(
    client: Client, db: asyncpg.Pool, body: Any, pointer: str
) -> None:
    resp = await client.post("/v2/audiences", json=body)
    assert resp.status == 400
    error = await resp.json()
    assert error["StatusCode"] == 400
    assert error["errors"][0]["source"] == {"pointer": pointer}
    assert error["errors"][0]["title"]
    assert await db.fetchval("SELECT count(*) FROM audiences") == 0


async def insert_members(
    db: asyncpg.Pool, audience_id: int, members: list[tuple[str, bool, int]]
) -> None:
    await db.executemany(
        "INSERT INTO memberships (audience_id, profile_id, member, version) VALUES ($1,$2,$3,$4)",
        [(audience_id, p, m, v) for p, m, v in members],
    )


async def test_clear_records_version_and_drops_older_changes(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    audience = await create(client, name="A")
    aid = audience["id"]
    await insert_members(db, aid, [("p1", True, 10), ("p2", False, 11)])
    queued = [{"action": "add", "profileIntegrationId": "q1", "audienceId": aid}]
    assert (await client.post("/v2/customer_audiences", json={"data": queued})).status == 204
    [(_, _, queued_version)] = await backlog(redis, aid)

    resp = await client.delete(f"/v2/audiences/{aid}/memberships")
    assert resp.status == 204
    assert await resp.read() == b""

    row = await db.fetchrow("SELECT cleared_version, deleted_at FROM audiences WHERE id=$1", aid)
    assert row is not None
    cleared = row["cleared_version"]
    assert cleared > queued_version
    assert row["deleted_at"] is None
    assert await redis_int(redis, KEYS.cleared, str(aid)) == cleared
    # No member counts at once; the rows go when the workers sweep.
    assert await current_count(db, aid) == 0
    assert await sweep_all(db) == 2
    assert await db.fetchval("SELECT count(*) FROM memberships WHERE audience_id=$1", aid) == 0
    # The whole backlog was older than the clear: dropped at once.
    assert await backlog(redis, aid) == []
    assert await redis_int(redis, KEYS.backlog_total) == 0
    assert await redis_int(redis, KEYS.stats(aid), "dropped") == 1
    # The audience stays and takes members again.
    again = [{"action": "add", "profileIntegrationId": "q2", "audienceId": aid}]
    assert (await client.post("/v2/customer_audiences", json={"data": again})).status == 204


async def test_delete_audience(client: Client, db: asyncpg.Pool, redis: aioredis.Redis) -> None:
    audience = await create(client, name="A", integration="amplitude", integrationId="c-9")
    aid = audience["id"]
    await insert_members(db, aid, [("p1", True, 10)])
    assert (await client.delete(f"/v2/audiences/{aid}")).status == 204
    row = await db.fetchrow("SELECT cleared_version, deleted_at FROM audiences WHERE id=$1", aid)
    assert row is not None
    assert row["deleted_at"] is not None
    assert row["cleared_version"] > 10
    assert await current_count(db, aid) == 0
    assert await sweep_all(db) == 1
    assert await db.fetchval("SELECT count(*) FROM memberships WHERE audience_id=$1", aid) == 0
    # Nothing was pending: Redis forgets the audience at once (Postgres keeps the clear).
    assert await redis_int(redis, KEYS.cleared, str(aid)) is None
    assert await redis_int(redis, KEYS.versions, str(aid)) is None
    assert not await redis.exists(KEYS.stats(aid))
    assert await redis.zscore(KEYS.tenant(1).audiences_idle, str(aid)) is None
    assert (await client.delete(f"/v2/audiences/{aid}")).status == 404
    # Memberships for a deleted audience are refused at once (the edge's cache forgot it).
    late = [{"action": "add", "profileIntegrationId": "p1", "audienceId": aid}]
    assert (await client.post("/v2/customer_audiences", json={"data": late})).status == 404


async def test_clear_versions_are_monotonic(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    aid = (await create(client, name="A"))["id"]
    seen = []
    for _ in range(3):
        assert (await client.delete(f"/v2/audiences/{aid}/memberships")).status == 204
        seen.append(await db.fetchval("SELECT cleared_version FROM audiences WHERE id=$1", aid))
    assert seen == sorted(set(seen))


async def test_attributes_are_merged_and_listed(client: Client, db: asyncpg.Pool) -> None:
    aid = (await create(client, name="A"))["id"]
    path = f"/v2/audience_customers/{aid}/attributes"
    resp = await client.put(path, json={"tier": "gold", "n": 1})
    assert resp.status == 204
    assert (await client.put(path, json={"n": 2, "nested": {"k": [1]}})).status == 204
    listed = await (await client.get("/v1/audiences")).json()
    assert listed["data"][0]["attributes"] == {"tier": "gold", "n": 2, "nested": {"k": [1]}}
    resp = await client.put(path, json=["not", "an", "object"])
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["source"] == {"pointer": ""}


async def test_authping(client: Client) -> None:
    resp = await client.get("/v2/authping")
    assert resp.status == 204
    assert await resp.read() == b""


async def test_official_sdk_works_unchanged(client: Client) -> None:
    config = talon_one.Configuration(host=str(client.make_url("")).rstrip("/"))
    config.api_key["api_key_v1"] = client.session.headers["Authorization"].split(" ", 1)[1]
    config.api_key_prefix["api_key_v1"] = "ApiKey-v1"
    api = talon_one.IntegrationApi(talon_one.ApiClient(config))

    created = await asyncio.to_thread(
        api.create_audience_v2,
        NewAudience(name="SDK", integration="amplitude", integrationId="sdk-1", sandbox=False),
    )
    assert (created.name, created.integration_id, created.sandbox) == ("SDK", "sdk-1", False)
    assert created.account_id == 1
    assert created.created.utcoffset() is not None
    renamed = await asyncio.to_thread(
        api.update_audience_v2, created.id, UpdateAudience(name="SDK 2")
    )
    assert (renamed.id, renamed.name, renamed.created) == (created.id, "SDK 2", created.created)
    await asyncio.to_thread(api.delete_audience_memberships_v2, created.id)
    await asyncio.to_thread(api.delete_audience_v2, created.id)
    with pytest.raises(talon_one.ApiException) as err:
        await asyncio.to_thread(api.delete_audience_v2, created.id)
    assert err.value.status == 404
