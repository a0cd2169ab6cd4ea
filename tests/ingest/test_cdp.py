"""Talon.One Third-party API (/cdp/...): audiences by the CDP's ids, profile changes, errors."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse

from schemas.settings import Settings
from tests.support.edge import Client, auth, backlog, create_key, redis_int, running_edge
from tests.support.redis_keys import KEYS

HOST = "mycompany.europe-west1.talon.one"
HEADERS = {"destination-hostname": HOST, "customer-data-platform-name": "Amplitude"}


@pytest.fixture
async def key(db: asyncpg.Pool) -> str:
    return (await create_key(db, scope="cdp"))[1]


@pytest.fixture
async def reader(db: asyncpg.Pool) -> str:
    """A key for the read API (a CDP key may not read it)."""
    return (await create_key(db, scope="read"))[1]


async def assert_cdp_error(resp: ClientResponse, status: int, error: str) -> None:
    """The Third-party API's error body, exactly."""
    assert resp.status == status
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"StatusCode", "Error", "RequestUUID"}
    assert (body["StatusCode"], body["Error"]) == (status, error)
    assert uuid.UUID(body["RequestUUID"]).version == 4


async def send_audience(
    client: Client,
    method: str,
    path: str,
    audience_id: str,
    name: str,
    platform: str = "Amplitude",
    destination: str = HOST,
) -> ClientResponse:
    """A CreateAndUpdateAudienceRequest with the contract's headers."""
    headers = {"destination-hostname": destination, "customer-data-platform-name": platform}
    body = {"audienceId": audience_id, "audienceName": name}
    return await client.request(method, path, json=body, headers=headers)


async def create(client: Client, audience_id: str, name: str = "Travel audience") -> Any:
    resp = await send_audience(client, "POST", "/cdp/audiences", audience_id, name)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def profiles(*changes: tuple[str, list[Any], list[Any]]) -> dict[str, Any]:
    return {"data": [{"customerProfileId": p, "adds": a, "deletes": d} for p, a, d in changes]}


async def test_create_answers_201_with_the_audience(
    client: Client, db: asyncpg.Pool, reader: str
) -> None:
    body = await create(client, "382370BKDB946")
    assert set(body) == {"id", "created", "accountId", "name", "integration", "integrationId"}
    assert (body["accountId"], body["name"]) == (1, "Travel audience")
    # The platform header names the integration, lowercased: Amplitude's cohort webhook
    # reaches the same audiences with integration "amplitude".
    assert (body["integration"], body["integrationId"]) == ("amplitude", "382370BKDB946")
    row = await db.fetchrow("SELECT * FROM audiences WHERE id = $1", body["id"])
    assert (row["integration"], row["integration_id"], row["created_in_3rd_party"]) == (
        "amplitude",
        "382370BKDB946",
        True,
    )
    listed = await (await client.get("/v1/audiences", headers=auth(reader))).json()
    assert [(a["id"], a["membersCount"]) for a in listed["data"]] == [(body["id"], 0)]


async def test_create_existing_is_409_per_platform(client: Client, db: asyncpg.Pool) -> None:
    await create(client, "382370BKDB946")
    resp = await send_audience(client, "POST", "/cdp/audiences", "382370BKDB946", "Other")
    await assert_cdp_error(resp, 409, "The audience with the ID '382370BKDB946' already exists")
    # Another CDP may use the same id for its own audience.
    other = await send_audience(
        client, "POST", "/cdp/audiences", "382370BKDB946", "Other", platform="Segment"
    )
    assert other.status == 201
    assert (await other.json())["integration"] == "segment"
    assert await db.fetchval("SELECT count(*) FROM audiences") == 2


async def test_update_renames_by_the_cdp_id(client: Client, db: asyncpg.Pool) -> None:
    created = await create(client, "c1")
    resp = await send_audience(client, "PUT", "/cdp/audiences/c1", "c1", "Renamed")
    assert resp.status == 200
    body = await resp.json()
    assert body == {**created, "name": "Renamed"}
    assert await db.fetchval("SELECT name FROM audiences WHERE id = $1", created["id"]) == "Renamed"


async def test_update_unknown_or_mismatched_is_refused(client: Client, db: asyncpg.Pool) -> None:
    await create(client, "c1")
    resp = await send_audience(client, "PUT", "/cdp/audiences/nope", "nope", "X")
    await assert_cdp_error(resp, 404, "The audience with the ID 'nope' does not exist")
    # Known to another platform only: still not this CDP's audience.
    resp = await send_audience(client, "PUT", "/cdp/audiences/c1", "c1", "X", platform="Segment")
    await assert_cdp_error(resp, 404, "The audience with the ID 'c1' does not exist")
    resp = await send_audience(client, "PUT", "/cdp/audiences/c1", "c2", "X")
    await assert_cdp_error(resp, 400, "audienceId 'c2' in the body differs from 'c1' in the path")
    assert await db.fetchval("SELECT name FROM audiences") == "Travel audience"


async def test_delete_removes_audience_and_its_queued_changes(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    created = await create(client, "c1")
    resp = await client.put(
        "/cdp/v2/customer_profiles/audiences", json=profiles(("p1", ["c1"], [])), headers=HEADERS
    )
    assert resp.status == 204
    assert len(await backlog(redis, created["id"])) == 1

    resp = await client.delete("/cdp/audiences/c1", headers=HEADERS)
    assert resp.status == 204
    assert await resp.read() == b""
    assert await db.fetchval("SELECT deleted_at IS NOT NULL FROM audiences") is True
    assert await backlog(redis, created["id"]) == []
    assert await redis_int(redis, KEYS.backlog_total) == 0

    resp = await client.delete("/cdp/audiences/c1", headers=HEADERS)
    await assert_cdp_error(resp, 404, "The audience with the ID 'c1' does not exist")
    # Deleted, the id is free again.
    await create(client, "c1")


async def test_profile_changes_by_talon_id(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a, b = (await create(client, "a"))["id"], (await create(client, "b"))["id"]
    body = profiles(("p1", [a, b], []), ("p2", [b], [a]), ("p1", [], [b]))
    resp = await client.put("/cdp/customer_profiles/audiences", json=body, headers=HEADERS)
    assert resp.status == 204
    assert await resp.read() == b""
    assert [(k, p) for k, p, _ in await backlog(redis, a)] == [("add", "p1"), ("delete", "p2")]
    assert [(k, p) for k, p, _ in await backlog(redis, b)] == [
        ("add", "p1"),
        ("add", "p2"),
        ("delete", "p1"),
    ]


async def test_profile_changes_by_cdp_id(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a, b = (await create(client, "a"))["id"], (await create(client, "b"))["id"]
    body = profiles(("p1", ["a", "b"], []), ("p2", [], ["a"]))
    resp = await client.put("/cdp/v2/customer_profiles/audiences", json=body, headers=HEADERS)
    assert resp.status == 204
    assert [(k, p) for k, p, _ in await backlog(redis, a)] == [("add", "p1"), ("delete", "p2")]
    assert [(k, p) for k, p, _ in await backlog(redis, b)] == [("add", "p1")]


async def test_empty_profile_changes_enqueue_nothing(client: Client, redis: aioredis.Redis) -> None:
    for path in ("/cdp/customer_profiles/audiences", "/cdp/v2/customer_profiles/audiences"):
        bodies: list[dict[str, Any]] = [{}, {"data": []}, profiles(("p1", [], []))]
        for body in bodies:
            resp = await client.put(path, json=body, headers=HEADERS)
            assert resp.status == 204, (path, body)
    assert await redis.dbsize() == 0


async def test_unknown_audiences_are_404_and_enqueue_nothing(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = (await create(client, "a"))["id"]
    resp = await client.put(
        "/cdp/customer_profiles/audiences",
        json=profiles(("p1", [a, 998], [999])),
        headers=HEADERS,
    )
    await assert_cdp_error(resp, 404, "The audiences with the IDs '998', '999' do not exist")
    resp = await client.put(
        "/cdp/v2/customer_profiles/audiences",
        json=profiles(("p1", ["a"], ["zz"])),
        headers=HEADERS,
    )
    await assert_cdp_error(resp, 404, "The audience with the ID 'zz' does not exist")
    # The v2 form names this CDP's audiences only.
    resp = await client.put(
        "/cdp/v2/customer_profiles/audiences",
        json=profiles(("p1", ["a"], [])),
        headers={**HEADERS, "customer-data-platform-name": "Segment"},
    )
    await assert_cdp_error(resp, 404, "The audience with the ID 'a' does not exist")
    await client.delete("/cdp/audiences/a", headers=HEADERS)
    resp = await client.put(
        "/cdp/customer_profiles/audiences", json=profiles(("p1", [a], [])), headers=HEADERS
    )
    await assert_cdp_error(resp, 404, f"The audience with the ID '{a}' does not exist")
    assert await backlog(redis, a) == []
    assert await redis_int(redis, KEYS.stats(a), "accepted") is None


@pytest.mark.parametrize(
    ("path", "ref"),
    [("/cdp/customer_profiles/audiences", 1), ("/cdp/v2/customer_profiles/audiences", "a")],
)
async def test_at_most_1000_adds_and_deletes_in_total(
    client: Client, redis: aioredis.Redis, path: str, ref: Any
) -> None:
    await create(client, "a")
    over = profiles(
        *((f"add{i}", [ref], []) for i in range(600)),
        *((f"del{i}", [], [ref]) for i in range(401)),
    )
    resp = await client.put(path, json=over, headers=HEADERS)
    await assert_cdp_error(
        resp, 400, "The total number of adds and deletes must be at most 1000; got 1001"
    )
    assert await redis.dbsize() == 0
    over["data"].pop()
    resp = await client.put(path, json=over, headers=HEADERS)
    assert resp.status == 204
    assert len(await backlog(redis, 1)) == 1000


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        pytest.param(
            "/cdp/customer_profiles/audiences",
            profiles(("p1", ["a"], [])),
            "Invalid request body: Expected `int`, got `str` (at /data/0/adds/0)",
            id="v1-with-cdp-id",
        ),
        pytest.param(
            "/cdp/v2/customer_profiles/audiences",
            profiles(("p1", [], [1])),
            "Invalid request body: Expected `str`, got `int` (at /data/0/deletes/0)",
            id="v2-with-talon-id",
        ),
        pytest.param(
            "/cdp/customer_profiles/audiences",
            profiles(("p1", [0], [])),
            "Invalid request body: Expected `int` >= 1 (at /data/0/adds/0)",
            id="v1-id-zero",
        ),
        pytest.param(
            "/cdp/v2/customer_profiles/audiences",
            profiles(("p1", [""], [])),
            "Invalid request body: Expected `str` of length >= 1 (at /data/0/adds/0)",
            id="v2-empty-id",
        ),
        pytest.param(
            "/cdp/customer_profiles/audiences",
            {"data": [{"adds": [1]}]},
            "Invalid request body: Object missing required field `customerProfileId` "
            "(at /data/0/customerProfileId)",
            id="no-profile",
        ),
        pytest.param(
            "/cdp/customer_profiles/audiences",
            profiles(("p" * 1001, [1], [])),
            "Invalid request body: Expected `str` of length <= 1000 (at /data/0/customerProfileId)",
            id="profile-too-long",
        ),
        pytest.param(
            "/cdp/customer_profiles/audiences",
            profiles(("p1", [1], []), ("p2", [1], [1])),
            "customerProfileId 'p2' at /data/1 both joins and leaves audience '1'",
            id="join-and-leave",
        ),
        pytest.param(
            "/cdp/audiences",
            {"audienceId": "a"},
            "Invalid request body: Object missing required field `audienceName` (at /audienceName)",
            id="create-without-name",
        ),
        pytest.param(
            "/cdp/audiences",
            {"audienceId": "a", "audienceName": "n" * 1001},
            "Invalid request body: Expected `str` of length <= 1000 (at /audienceName)",
            id="create-name-too-long",
        ),
    ],
)
async def test_invalid_bodies_are_400_and_change_nothing(
    client: Client, db: asyncpg.Pool, redis: aioredis.Redis, path: str, body: Any, error: str
) -> None:
    await db.execute("INSERT INTO audiences (account_id, name) VALUES (1, 'A')")
    method = client.post if path == "/cdp/audiences" else client.put
    await assert_cdp_error(await method(path, json=body, headers=HEADERS), 400, error)
    assert await redis.dbsize() == 0
    assert await db.fetchval("SELECT count(*) FROM audiences") == 1


async def test_malformed_json_and_content_type(client: Client, redis: aioredis.Redis) -> None:
    resp = await client.put(
        "/cdp/customer_profiles/audiences",
        data=b'{"data": [',
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    await assert_cdp_error(resp, 400, "Malformed JSON: Input data was truncated")
    resp = await client.post(
        "/cdp/audiences", data=b"audienceId=a", headers={**HEADERS, "Content-Type": "text/plain"}
    )
    await assert_cdp_error(
        resp, 415, "Unsupported content type: Expected application/json, got text/plain"
    )
    assert await redis.dbsize() == 0


ENDPOINTS = [
    ("POST", "/cdp/audiences", {"audienceId": "a", "audienceName": "A"}),
    ("PUT", "/cdp/audiences/a", {"audienceId": "a", "audienceName": "A"}),
    ("DELETE", "/cdp/audiences/a", None),
    ("PUT", "/cdp/customer_profiles/audiences", profiles(("p", [1], []))),
    ("PUT", "/cdp/v2/customer_profiles/audiences", profiles(("p", ["a"], []))),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    ("missing", "error"),
    [
        ("destination-hostname", "No Deployment URL specified"),
        ("customer-data-platform-name", "No customer data platform name specified"),
    ],
)
async def test_each_header_is_required(
    client: Client,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    method: str,
    path: str,
    body: Any,
    missing: str,
    error: str,
) -> None:
    await create(client, "a")
    before = await db.fetch("SELECT * FROM audiences")
    for value in (None, "", "  "):
        headers = {k: v for k, v in HEADERS.items() if k != missing}
        if value is not None:
            headers[missing] = value
        resp = await client.request(method, path, json=body, headers=headers)
        await assert_cdp_error(resp, 400, error)
    assert await db.fetch("SELECT * FROM audiences") == before
    assert await redis.dbsize() == 0


async def test_destination_hostnames_can_be_restricted(
    settings: Settings, db: asyncpg.Pool, key: str, redis: aioredis.Redis
) -> None:
    restricted = settings.with_changes(
        allowed_destination_hostnames=f" {HOST.upper()} , other.talon.one"
    )
    async with running_edge(restricted, key) as client:
        resp = await send_audience(
            client, "POST", "/cdp/audiences", "a", "A", destination="evil.example.com"
        )
        await assert_cdp_error(resp, 400, "Deployment URL 'evil.example.com' is not served here")
        assert await db.fetchval("SELECT count(*) FROM audiences") == 0
        for destination in (HOST, f"https://{HOST}/", "other.talon.one."):
            resp = await send_audience(
                client, "POST", "/cdp/audiences", destination, "A", destination=destination
            )
            assert resp.status == 201, destination
    # Empty (the default): any deployment name is answered.
    async with running_edge(settings, key) as client:
        resp = await send_audience(
            client, "POST", "/cdp/audiences", "b", "B", destination="anything.example.com"
        )
        assert resp.status == 201
        # Without a scheme the whole value is the hostname: "l/tk:np7w" is not host "l" (the
        # fuzz found it accepted).
        for bad in ("L/tk:np7w;Z5ZF", "host:8080", "a b"):
            resp = await send_audience(client, "POST", "/cdp/audiences", "c", "C", destination=bad)
            await assert_cdp_error(
                resp, 400, "destination-hostname must be a hostname (or a URL of one)"
            )


async def test_backlog_full_is_429_in_the_cdp_shape(
    settings: Settings, db: asyncpg.Pool, key: str, redis: aioredis.Redis
) -> None:
    async with running_edge(settings.with_changes(max_backlog=1), key) as client:
        await create(client, "a")
        resp = await client.put(
            "/cdp/v2/customer_profiles/audiences",
            json=profiles(("p1", ["a"], []), ("p2", ["a"], [])),
            headers=HEADERS,
        )
        await assert_cdp_error(
            resp,
            429,
            "Backlog full: 0 changes are queued; this request would pass the bound of 1. "
            "Nothing was accepted. (at /data)",
        )
        assert resp.headers["Retry-After"] == "1"
    assert await redis.dbsize() == 0


async def test_unknown_route_and_method_in_the_cdp_shape(client: Client) -> None:
    resp = await client.get("/cdp/nothing", headers=HEADERS)
    await assert_cdp_error(resp, 404, "Not Found")
    resp = await client.get("/cdp/audiences", headers=HEADERS)
    assert resp.status == 405
    assert (await resp.json())["StatusCode"] == 405


PROBES: dict[str, tuple[str, Any, int]] = {
    "/v2/authping": ("GET", None, 204),
    "/v2/customer_audiences": ("POST", {"data": []}, 204),
    "/v1/audiences": ("GET", None, 200),
    "/cdp/v2/customer_profiles/audiences": ("PUT", {"data": []}, 204),
    # Refused for its body, so only after the key was let through.
    "/amplitude/cohorts": ("POST", {}, 400),
}


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [
        (None, set(PROBES)),
        ("all", set(PROBES)),
        ("cdp", {"/cdp/v2/customer_profiles/audiences", "/amplitude/cohorts", "/v2/authping"}),
        ("integration", {"/v2/customer_audiences", "/v2/authping"}),
        ("read", {"/v1/audiences"}),
        ("typo", set()),
    ],
)
async def test_key_scopes(
    settings: Settings,
    db: asyncpg.Pool,
    redis: aioredis.Redis,
    scope: str | None,
    allowed: set[str],
) -> None:
    _, key = await create_key(db, scope=scope)
    async with running_edge(settings, key) as client:
        for path, (method, body, status) in PROBES.items():
            resp = await client.request(method, path, json=body, headers=HEADERS)
            if path in allowed:
                assert resp.status == status, (scope, path)
                continue
            details = f"A key with scope '{scope or 'all'}' may call only"
            if path.startswith("/cdp/"):
                error = (await resp.json())["Error"]
                assert error.startswith(f"API key not allowed here: {details} ")
                await assert_cdp_error(resp, 403, error)
            else:
                assert resp.status == 403, (scope, path)
                error = await resp.json()
                assert error["StatusCode"] == 403
                assert error["errors"][0]["title"] == "API key not allowed here"
                assert error["errors"][0]["details"].startswith(details)
                assert error["errors"][0]["source"] == {"parameter": "Authorization"}
    assert await redis.dbsize() == 0
    assert await db.fetchval("SELECT count(*) FROM audiences") == 0
