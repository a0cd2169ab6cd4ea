"""No surface crosses tenants: a key of one tenant naming another's audience gets exactly what an
unknown audience gets and enqueues nothing; /cdp/ takes only the key's own destination-hostname;
the same profile id in two tenants is two profiles; an ``ops`` key reaches no tenant's data."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse

from admin.tenants import add_tenant
from schemas.settings import Settings
from tests.support.edge import Client, auth, backlog, create_key, redis_int, running_edge
from tests.support.redis_keys import KEYS
from worker.drain import run_until_drained

ACME = "acme.europe-west1.talon.one"
GLOBEX = "globex.us-east1.talon.one"
# An audience id no tenant has.
UNKNOWN = 987654


class World:
    """Two tenants with a key each (and one of the default tenant): ``acme`` and ``globex``."""

    def __init__(self, client: Client, acme: str, globex: str, default: str) -> None:
        self.client = client
        self.acme = acme
        self.globex = globex
        self.default = default

    async def call(
        self, key: str, method: str, path: str, json: Any = None, **headers: str
    ) -> ClientResponse:
        return await self.client.request(method, path, json=json, headers=auth(key) | headers)

    async def audience(self, key: str, name: str, **body: Any) -> dict[str, Any]:
        resp = await self.call(key, "POST", "/v2/audiences", {"name": name, **body})
        assert resp.status == 201, await resp.text()
        created: dict[str, Any] = await resp.json()
        return created


@pytest.fixture
async def world(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> AsyncIterator[World]:
    acme = await add_tenant(db, ACME, account_id=100)
    globex = await add_tenant(db, GLOBEX.upper(), account_id=200)
    keys = [(await create_key(db, tenant=t))[1] for t in (acme.id, globex.id)]
    default = (await create_key(db))[1]
    async with running_edge(settings) as client:
        yield World(client, keys[0], keys[1], default)


def cdp_headers(hostname: str, platform: str = "Amplitude") -> dict[str, str]:
    return {"destination-hostname": hostname, "customer-data-platform-name": platform}


async def same_as_unknown(
    resp: ClientResponse, unknown: ClientResponse, named: object, unknown_named: object
) -> None:
    """``resp`` (for another tenant's audience) is what ``unknown`` (for one no tenant has) is,
    the name or id given aside: status, headers that matter, and body; nothing hints at it."""
    assert resp.status == unknown.status == 404
    assert resp.content_type == unknown.content_type
    body, expected = await resp.text(), await unknown.text()
    # The CDP API's errors carry a fresh RequestUUID each.
    uuid = r'"RequestUUID":"[0-9a-f-]+"'
    body = re.sub(uuid, "", body).replace(str(named), "<audience>")
    expected = re.sub(uuid, "", expected).replace(str(unknown_named), "<audience>")
    assert body == expected


async def queued(redis: aioredis.Redis) -> int | None:
    return await redis_int(redis, KEYS.backlog_total)


async def test_integration_api_cannot_reach_another_tenants_audience(
    world: World, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    theirs = (await world.audience(world.globex, "Globex buyers"))["id"]
    # Their own change first, so the edge's cache knows the audience as live (for them).
    change = {"action": "add", "profileIntegrationId": "p1", "audienceId": theirs}
    resp = await world.call(world.globex, "POST", "/v2/customer_audiences", {"data": [change]})
    assert resp.status == 204
    before = await queued(redis)
    entries = await backlog(redis, theirs)

    for method, path, body in [
        ("PUT", "/v2/audiences/{}", {"name": "taken over"}),
        ("DELETE", "/v2/audiences/{}", None),
        ("DELETE", "/v2/audiences/{}/memberships", None),
        ("PUT", "/v2/audience_customers/{}/attributes", {"tier": "gold"}),
    ]:
        resp = await world.call(world.acme, method, path.format(theirs), body)
        unknown = await world.call(world.acme, method, path.format(UNKNOWN), body)
        await same_as_unknown(resp, unknown, theirs, UNKNOWN)

    for audience_id in (theirs, UNKNOWN):
        mine = {**change, "audienceId": audience_id}
        resp = await world.call(world.acme, "POST", "/v2/customer_audiences", {"data": [mine]})
        if audience_id == theirs:
            crossed = resp
    await same_as_unknown(crossed, resp, theirs, UNKNOWN)

    assert await queued(redis) == before
    assert await backlog(redis, theirs) == entries
    row = await db.fetchrow(
        "SELECT name, attributes, deleted_at, cleared_version FROM audiences WHERE id = $1",
        theirs,
    )
    assert tuple(row) == ("Globex buyers", None, None, 0)


async def test_integration_ids_and_account_ids_are_per_tenant(world: World) -> None:
    body = {"integration": "segment", "integrationId": "cohort-1"}
    ours = await world.audience(world.acme, "Ours", **body)
    theirs = await world.audience(world.globex, "Theirs", **body)
    assert ours["id"] != theirs["id"]
    assert (ours["accountId"], theirs["accountId"]) == (100, 200)
    resp = await world.call(world.acme, "POST", "/v2/audiences", {"name": "Again", **body})
    assert resp.status == 409
    default = await world.audience(world.default, "Default", **body)
    assert default["accountId"] == 1


async def test_cdp_v1_cannot_reach_another_tenants_audience(
    world: World, redis: aioredis.Redis
) -> None:
    theirs = (await world.audience(world.globex, "Globex buyers"))["id"]
    before = await queued(redis)
    answers = []
    for audience_id in (theirs, UNKNOWN):
        body = {"data": [{"customerProfileId": "p1", "adds": [audience_id], "deletes": []}]}
        answers.append(
            await world.call(
                world.acme, "PUT", "/cdp/customer_profiles/audiences", body, **cdp_headers(ACME)
            )
        )
    await same_as_unknown(answers[0], answers[1], theirs, UNKNOWN)
    assert await queued(redis) == before
    assert await backlog(redis, theirs) == []


async def test_cdp_v2_and_cdp_audiences_are_per_tenant(world: World, redis: aioredis.Redis) -> None:
    created = {"audienceId": "travel", "audienceName": "Travel"}
    resp = await world.call(world.globex, "POST", "/cdp/audiences", created, **cdp_headers(GLOBEX))
    assert resp.status == 201
    theirs = (await resp.json())["id"]
    before = await queued(redis)

    for method, path, body in [
        ("PUT", "/cdp/audiences/{}", {"audienceId": "{}", "audienceName": "Taken over"}),
        ("DELETE", "/cdp/audiences/{}", None),
        (
            "PUT",
            "/cdp/v2/customer_profiles/audiences",
            {"data": [{"customerProfileId": "p1", "adds": ["{}"], "deletes": []}]},
        ),
    ]:
        answers = []
        for name in ("travel", "unknown-cohort"):
            filled = None if body is None else _fill(body, name)
            answers.append(
                await world.call(world.acme, method, path.format(name), filled, **cdp_headers(ACME))
            )
        await same_as_unknown(answers[0], answers[1], "travel", "unknown-cohort")
    assert await queued(redis) == before
    assert await backlog(redis, theirs) == []

    # The same CDP id in another tenant is another audience.
    resp = await world.call(world.acme, "POST", "/cdp/audiences", created, **cdp_headers(ACME))
    assert resp.status == 201
    ours = await resp.json()
    assert ours["accountId"] == 100
    resp = await world.call(
        world.globex, "PUT", "/cdp/audiences/travel", created, **cdp_headers(GLOBEX)
    )
    assert resp.status == 200
    assert (await resp.json())["accountId"] == 200


def _fill(body: Any, name: str) -> Any:
    if isinstance(body, dict):
        return {k: _fill(v, name) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, name) for v in body]
    return name if body == "{}" else body


async def test_cdp_destination_hostname_must_be_the_keys_tenant(
    world: World, redis: aioredis.Redis
) -> None:
    created = {"audienceId": "travel", "audienceName": "Travel"}
    refusals = []
    for key, hostname in [
        (world.acme, GLOBEX),  # another tenant's
        (world.acme, "nobody.talon.one"),  # no tenant's
        (world.default, ACME),  # the default tenant's key, for a tenant's hostname
    ]:
        resp = await world.call(key, "POST", "/cdp/audiences", created, **cdp_headers(hostname))
        assert resp.status == 401
        body = await resp.json()
        assert set(body) == {"StatusCode", "Error", "RequestUUID"}
        assert body["StatusCode"] == 401
        refusals.append(body["Error"].replace(hostname, "<hostname>"))
    # The same words whether the hostname is a tenant's or not.
    assert len(set(refusals)) == 1, refusals
    assert await queued(redis) is None

    # The key's own hostname, however written; the default tenant's keys, any other hostname.
    for key, hostname in [
        (world.acme, f"https://{ACME.upper()}/"),
        (world.default, "mycompany.europe-west1.talon.one"),
    ]:
        resp = await world.call(key, "POST", "/cdp/audiences", created, **cdp_headers(hostname))
        assert resp.status == 201, await resp.text()


async def test_amplitude_webhook_keeps_cohorts_and_profiles_per_tenant(
    world: World, settings: Settings, redis: aioredis.Redis
) -> None:
    def cohort(message_id: str, country: str) -> dict[str, Any]:
        return {
            "cohort_name": "Binge watchers",
            "cohort_id": "5x9k2qw",
            "in_cohort": True,
            "computed_time": "1764340000",
            "message_id": message_id,
            "users": [{"user_id": "viewer-1", "user_properties": {"country": country}}],
        }

    answers = {}
    for key, country in ((world.acme, "DE"), (world.globex, "US")):
        resp = await world.call(key, "POST", "/amplitude/cohorts", cohort(country, country))
        assert resp.status == 200
        answers[key] = await resp.json()
    ours, theirs = answers[world.acme], answers[world.globex]
    assert ours["audienceId"] != theirs["audienceId"]
    assert (ours["accepted"], theirs["accepted"]) == (1, 1)

    await run_until_drained(settings.with_changes(rate_limit_per_minute=0))
    for key, country, audience_id in (
        (world.acme, "DE", ours["audienceId"]),
        (world.globex, "US", theirs["audienceId"]),
    ):
        resp = await world.call(key, "GET", "/v1/customer_profiles/viewer-1/attributes")
        assert (await resp.json())["attributes"] == {"country": country}
        resp = await world.call(key, "GET", "/v1/customer_profiles/viewer-1/audiences")
        assert [a["id"] for a in (await resp.json())["data"]] == [audience_id]
    # A profile only another tenant knows is, here, a profile with nothing.
    resp = await world.call(world.default, "GET", "/v1/customer_profiles/viewer-1/attributes")
    assert (await resp.json())["attributes"] == {}
    resp = await world.call(world.default, "GET", "/v1/customer_profiles/viewer-1/audiences")
    assert (await resp.json())["data"] == []


async def test_amplitude_message_ids_are_per_tenant(world: World, redis: aioredis.Redis) -> None:
    body = {
        "cohort_name": "Binge watchers",
        "cohort_id": "5x9k2qw",
        "in_cohort": True,
        "computed_time": "1764340000",
        "message_id": "the-same-id",
        "users": [{"user_id": "viewer-1"}],
    }
    for key in (world.acme, world.globex):
        resp = await world.call(key, "POST", "/amplitude/cohorts", body)
        assert resp.status == 200
        assert (await resp.json())["duplicate"] is False
    before = await queued(redis)
    # Each tenant's retry is a duplicate of its own batch.
    for key in (world.acme, world.globex):
        resp = await world.call(key, "POST", "/amplitude/cohorts", body)
        assert resp.status == 200
        assert (await resp.json())["duplicate"] is True
    assert await queued(redis) == before == 2


async def test_read_api_shows_only_the_keys_tenant(
    world: World, settings: Settings, db: asyncpg.Pool
) -> None:
    ours = [(await world.audience(world.acme, f"Ours {i}"))["id"] for i in range(2)]
    theirs = (await world.audience(world.globex, "Theirs"))["id"]
    change = {"action": "add", "profileIntegrationId": "p1", "audienceId": theirs}
    resp = await world.call(world.globex, "POST", "/v2/customer_audiences", {"data": [change]})
    assert resp.status == 204
    await run_until_drained(settings.with_changes(rate_limit_per_minute=0))

    page = await (await world.call(world.acme, "GET", "/v1/audiences")).json()
    assert [a["id"] for a in page["data"]] == ours
    assert page["totalResultSize"] == 2
    assert {a["accountId"] for a in page["data"]} == {100}
    page = await (await world.call(world.acme, "GET", "/v1/audiences?skip=1&pageSize=5")).json()
    assert [a["id"] for a in page["data"]] == ours[1:]

    path = "/v1/audiences/{}/memberships"
    resp = await world.call(world.acme, "GET", path.format(theirs))
    unknown = await world.call(world.acme, "GET", path.format(UNKNOWN))
    await same_as_unknown(resp, unknown, theirs, UNKNOWN)
    resp = await world.call(world.globex, "GET", path.format(theirs))
    assert [m["profileIntegrationId"] for m in (await resp.json())["data"]] == ["p1"]

    resp = await world.call(world.acme, "GET", "/v1/customer_profiles/p1/audiences")
    assert (await resp.json())["data"] == []
    resp = await world.call(world.globex, "GET", "/v1/customer_profiles/p1/audiences")
    assert [a["id"] for a in (await resp.json())["data"]] == [theirs]


async def test_ops_key_reads_status_and_no_tenants_data(world: World, db: asyncpg.Pool) -> None:
    _, ops = await create_key(db, scope="ops", tenant=None)
    for method, path, headers in [
        ("POST", "/v2/audiences", {}),
        ("GET", "/v2/authping", {}),
        ("POST", "/cdp/audiences", cdp_headers(ACME)),
        ("POST", "/amplitude/cohorts", {}),
        ("GET", "/v1/audiences", {}),
        ("GET", "/v1/audiences/1/memberships", {}),
        ("GET", "/v1/customer_profiles/p1/audiences", {}),
        ("GET", "/v1/customer_profiles/p1/attributes", {}),
    ]:
        resp = await world.call(ops, method, path, {"name": "x"}, **headers)
        assert resp.status == 403, (method, path, resp.status)
    resp = await world.call(ops, "GET", "/v1/status")
    assert resp.status == 200


async def test_status_shows_a_tenant_its_own_queue_at_its_own_rate(
    world: World, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """/v1/status (what the dashboard polls with the reader's key): a tenant's key sees its
    own audiences, totals and rate; the ops key every tenant with work, busiest first."""
    a = (await world.audience(world.acme, "acme cohort"))["id"]
    g = (await world.audience(world.globex, "globex cohort"))["id"]
    await add_changes(world, world.acme, a, 30)
    await add_changes(world, world.globex, g, 50)
    acme_id = await db.fetchval("SELECT id FROM tenants WHERE hostname = $1", ACME)
    globex_id = await db.fetchval("SELECT id FROM tenants WHERE hostname = $1", GLOBEX)
    # As the workers publish the tenants' own rates (worker/rates.py): acme 600/min.
    await redis.hset(KEYS.tenant_rates, str(acme_id), "600:10")  # type: ignore[misc]
    await redis.hset(KEYS.config, "workers_rate_per_minute", "1200")  # type: ignore[misc]

    acme = await (await world.call(world.acme, "GET", "/v1/status")).json()
    assert [x["name"] for x in acme["audiences"]] == ["acme cohort"]
    assert acme["totals"]["accepted"] == acme["totals"]["pending"] == 30
    assert acme["rate"]["configuredPerMinute"] == 600
    assert acme["audiences"][0]["etaSeconds"] == 3.0  # 30 at 600/min
    assert acme["tenants"] is None
    globex = await (await world.call(world.globex, "GET", "/v1/status")).json()
    assert [x["name"] for x in globex["audiences"]] == ["globex cohort"]
    assert globex["totals"]["pending"] == 50
    assert globex["rate"]["configuredPerMinute"] == 1200
    assert "acme" not in str(globex)

    _, ops_key = await create_key(db, scope="ops", tenant=None)
    fleet = await (await world.call(ops_key, "GET", "/v1/status")).json()
    assert fleet["totals"]["pending"] == 80
    assert [(t["hostname"], t["pending"], t["ratePerMinute"]) for t in fleet["tenants"]] == [
        (GLOBEX, 50, 1200),
        (ACME, 30, 600),
    ]
    assert fleet["tenants"][1]["etaSeconds"] == 3.0
    assert fleet["tenants"][0]["id"] == globex_id


async def add_changes(world: World, key: str, audience: int, n: int) -> None:
    body = {
        "data": [
            {"action": "add", "profileIntegrationId": f"p{i}", "audienceId": audience}
            for i in range(n)
        ]
    }
    resp = await world.call(key, "POST", "/v2/customer_audiences", body)
    assert resp.status == 204, await resp.text()


async def test_acceptances_carry_the_time_until_applied_at_the_tenants_rate(
    world: World, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """X-Cohortsync-Eta-Seconds on the Integration and CDP APIs, ``etaSeconds`` in the
    Amplitude webhook's 200: the tenant's pending changes (these included) at its own rate."""
    acme_id = await db.fetchval("SELECT id FROM tenants WHERE hostname = $1", ACME)
    await redis.hset(KEYS.tenant_rates, str(acme_id), "600:10")  # type: ignore[misc]
    a = (await world.audience(world.acme, "acme cohort"))["id"]
    g = (await world.audience(world.globex, "globex cohort"))["id"]
    # Another tenant's backlog is not this one's wait.
    await add_changes(world, world.globex, g, 500)

    body = {
        "data": [
            {"action": "add", "profileIntegrationId": f"p{i}", "audienceId": a} for i in range(30)
        ]
    }
    resp = await world.call(world.acme, "POST", "/v2/customer_audiences", body)
    assert resp.status == 204
    assert resp.headers["X-Cohortsync-Eta-Seconds"] == "3"  # 30 at 600/min

    created = {"audienceId": "travel", "audienceName": "Travel"}
    resp = await world.call(world.acme, "POST", "/cdp/audiences", created, **cdp_headers(ACME))
    assert resp.status == 201
    update = {"data": [{"customerProfileId": f"c{i}", "adds": ["travel"]} for i in range(30)]}
    resp = await world.call(
        world.acme, "PUT", "/cdp/v2/customer_profiles/audiences", update, **cdp_headers(ACME)
    )
    assert resp.status == 204, await resp.text()
    assert resp.headers["X-Cohortsync-Eta-Seconds"] == "6"  # 60 pending at 600/min

    cohort = {
        "message_id": "m-1",
        "cohort_id": "c1",
        "cohort_name": "Cohort",
        "in_cohort": True,
        "users": [{"user_id": f"u{i}"} for i in range(60)],
    }
    resp = await world.call(world.acme, "POST", "/amplitude/cohorts", cohort)
    assert resp.status == 200
    assert (await resp.json())["etaSeconds"] == 12  # 120 pending at 600/min
