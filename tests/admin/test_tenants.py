"""``cohortsync-admin tenant`` (add, list, set-rate, remove) and keys of a tenant, in-process
against real Postgres and Redis."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from schemas import keys
from schemas.settings import Settings
from tests.support.admin import Admin
from tests.support.edge import auth, backlog, redis_int, running_edge
from tests.support.redis_keys import KEYS

ACME = "acme.europe-west1.talon.one"


async def tenants(db: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT id, hostname, account_id, rate_per_minute, burst FROM tenants ORDER BY id"
    )
    return [tuple(r) for r in rows]


def listed(out: str) -> dict[str, list[str]]:
    """``tenant list``'s rows by hostname, each split on whitespace."""
    lines = [line for line in out.splitlines() if line.strip()]
    return {cells[0]: cells for cells in (line.split() for line in lines[1:])}


async def test_add_list_and_set_rate(admin: Admin, db: asyncpg.Pool, redis: aioredis.Redis) -> None:
    run = await admin(
        "tenant", "add", ACME.upper(), "--account-id", "17", "--rate-per-minute", "600"
    )
    assert run.code == 0, run.err
    assert f"'{ACME}'" in run.out
    run = await admin("tenant", "add", "https://globex.talon.one/", COHORTSYNC_ACCOUNT_ID="5")
    assert run.code == 0, run.err
    assert await tenants(db) == [
        (1, "default", 1, None, None),
        (2, ACME, 17, 600, None),
        (3, "globex.talon.one", 5, None, None),
    ]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(KEYS.tenant(2).totals, mapping={"pending": 1234, "accepted": 2000})
        # The workers published their default (their COHORTSYNC_RATE_LIMIT_PER_MINUTE / _BURST).
        pipe.hset(
            KEYS.config, mapping={keys.CONFIG_WORKERS_RATE: 900, keys.CONFIG_WORKERS_BURST: 9}
        )
        await pipe.execute()

    run = await admin("tenant", "list")
    assert run.code == 0, run.err
    rows = listed(run.out)
    assert run.out.split()[:7] == [
        "hostname", "id", "account", "rate/min", "burst", "audiences", "backlog"
    ]  # fmt: skip
    assert rows["default"] == ["default", "1", "1", "900", "(default)", "9", "(default)", "0", "0"]
    assert rows[ACME] == [ACME, "2", "17", "600", "9", "(default)", "0", "1,234"]
    assert rows["globex.talon.one"][3:5] == ["900", "(default)"]

    run = await admin("tenant", "set-rate", ACME, "1200", "--burst", "20")
    assert run.code == 0, run.err
    assert "rate 1,200 per minute, burst 20" in run.out
    run = await admin("tenant", "set-rate", ACME, "0")
    assert run.code == 0, run.err
    assert (await tenants(db))[1] == (2, ACME, 17, 0, 20)  # the burst stays
    assert listed((await admin("tenant", "list")).out)[ACME][3:5] == ["none", "20"]
    run = await admin("tenant", "set-rate", ACME, "--reset")
    assert run.code == 0, run.err
    assert (await tenants(db))[1] == (2, ACME, 17, None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tenant", "add", "default"), "tenant 'default' already exists"),
        (("tenant", "add", "not a host"), "'not a host' is not a hostname"),
        (("tenant", "add", "x.talon.one", "--rate-per-minute", "-1"), "-1 is not from 0"),
        (("tenant", "add", "x.talon.one", "--burst", "lots"), "'lots' is not a whole number"),
        (("tenant", "add", "x.talon.one", "--account-id", "0"), "0 is not from 1"),
        (("tenant", "add", "x.talon.one", "--rate-per-minute", "2147483648"), "not from 0 to"),
        (("tenant", "set-rate", "nobody.talon.one", "10"), "no tenant 'nobody.talon.one'"),
        (("tenant", "set-rate", "default"), "give either PER_MINUTE"),
        (("tenant", "remove", "nobody.talon.one"), "no tenant 'nobody.talon.one'"),
        (("tenant", "remove", "default"), "cannot be removed"),
        (("create-key", "k", "--tenant", "nobody.talon.one"), "no tenant 'nobody.talon.one'"),
        (("create-key", "k", "--tenant", "default", "--scope", "ops"), "belongs to no tenant"),
    ],
)
async def test_mistakes_exit_2_with_a_clear_message(
    admin: Admin, db: asyncpg.Pool, args: tuple[str, ...], message: str
) -> None:
    run = await admin(*args)
    assert run.code == 2
    assert message in run.err
    assert "Traceback" not in run.err
    assert await tenants(db) == [(1, "default", 1, None, None)]
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


@pytest.mark.parametrize(
    "args",
    [
        ("tenant",),
        ("tenant", "add"),
        ("tenant", "list"),
        ("tenant", "set-rate"),
        ("tenant", "remove"),
    ],
)
async def test_every_tenant_command_has_help(admin: Admin, args: tuple[str, ...]) -> None:
    run = await admin(*args, "--help")
    assert run.code == 0
    assert run.out.startswith("usage: cohortsync-admin tenant")
    assert len(run.out.splitlines()) > 4


async def test_keys_belong_to_a_tenant(admin: Admin, db: asyncpg.Pool) -> None:
    await admin("tenant", "add", ACME)
    for args in (("create-key", "a", "--tenant", ACME.upper()), ("create-key", "b")):
        run = await admin(*args)
        assert run.code == 0, run.err
    run = await admin("create-key", "watcher", "--scope", "ops")
    assert run.code == 0, run.err
    rows = await db.fetch("SELECT name, scope, tenant_id FROM api_keys ORDER BY id")
    assert [tuple(r) for r in rows] == [("a", None, 2), ("b", None, 1), ("watcher", "ops", None)]
    listing = (await admin("list-keys")).out.splitlines()
    assert listing[0].split()[:5] == ["id", "name", "prefix", "scope", "tenant"]
    assert [line.split()[4] for line in listing[1:]] == [ACME, "default", "-"]


async def test_migrate_writes_the_default_tenants_account_id(
    admin: Admin, db: asyncpg.Pool
) -> None:
    run = await admin("migrate", COHORTSYNC_ACCOUNT_ID="4242")
    assert run.code == 0, run.err
    assert await db.fetchval("SELECT account_id FROM tenants WHERE id = 1") == 4242


async def test_remove_is_refused_while_the_tenant_has_audiences_unless_purged(
    admin: Admin, settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    await admin("tenant", "add", ACME, "--account-id", "17")
    key = (await admin("create-key", "acme", "--tenant", ACME)).out.strip()
    amplitude = {
        "cohort_name": "Binge watchers",
        "cohort_id": "c1",
        "in_cohort": True,
        "computed_time": "1764340000",
        "message_id": "m1",
        "users": [{"user_id": "u1", "user_properties": {"plan": "gold"}}, {"user_id": "u2"}],
    }
    async with running_edge(settings, key) as client:
        resp = await client.post("/amplitude/cohorts", json=amplitude)
        assert resp.status == 200
        audience = (await resp.json())["audienceId"]
        other = await client.post("/v2/audiences", json={"name": "Other"})
        assert other.status == 201
    # A member already applied, as a worker would have.
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           VALUES ($1, 'u0', true, 1)""",
        audience,
    )
    assert len(await backlog(redis, audience)) == 2

    run = await admin("tenant", "remove", ACME)
    assert run.code == 2
    assert f"tenant '{ACME}' has 2 live audiences" in run.err
    assert "--purge" in run.err
    assert await db.fetchval("SELECT count(*) FROM tenants") == 2
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 1

    run = await admin("tenant", "remove", ACME, "--purge")
    assert run.code == 0, run.err
    assert f"removed tenant 2 '{ACME}', 2 live audiences deleted" in run.out
    assert await tenants(db) == [(1, "default", 1, None, None)]
    for table in ("audiences", "memberships", "api_keys", "profile_attributes"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    # Redis was told as by the edge's DELETE: the queued changes are gone.
    assert await backlog(redis, audience) == []
    assert await redis_int(redis, KEYS.backlog_total) == 0
    # Its keys went with it (the dispatcher drops its id from the active list at its turn);
    # the fleet's totals keep what it counted.
    acme = KEYS.tenant(2)
    assert not await redis.exists(acme.totals, acme.audiences_idle, acme.audiences_pending)
    assert await redis.smembers(KEYS.tenants_known) == set()  # type: ignore[misc]
    assert await redis.zscore(KEYS.tenants_pending, "2") is None
    assert int(await redis.hget(KEYS.totals, "accepted")) == 2  # type: ignore[misc]
    async with running_edge(settings) as client:
        resp = await client.get("/v2/authping", headers=auth(key))
        assert resp.status == 401


async def test_remove_a_tenant_without_live_audiences(admin: Admin, db: asyncpg.Pool) -> None:
    await admin("tenant", "add", ACME)
    await admin("create-key", "acme", "--tenant", ACME)
    tenant = await db.fetchval("SELECT id FROM tenants WHERE hostname = $1", ACME)
    await db.execute(
        """INSERT INTO audiences (tenant_id, account_id, name, deleted_at)
           VALUES ($1, 1, 'x', now())""",
        tenant,
    )
    run = await admin("tenant", "remove", ACME)
    assert run.code == 0, run.err
    assert f"removed tenant {tenant} '{ACME}'" in run.out
    assert await db.fetchval("SELECT count(*) FROM audiences") == 0
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_an_edge_still_trusting_a_removed_tenants_key_answers_401(
    admin: Admin, settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    await admin("tenant", "add", ACME)
    key = (await admin("create-key", "acme", "--tenant", ACME)).out.strip()
    async with running_edge(settings, key) as client:
        assert (await client.get("/v2/authping")).status == 204  # the key is cached now
        run = await admin("tenant", "remove", ACME)
        assert run.code == 0, run.err
        resp = await client.post("/v2/audiences", json={"name": "late"})
        assert resp.status == 401
        body = {
            "cohort_name": "c",
            "cohort_id": "c1",
            "in_cohort": True,
            "computed_time": "1",
            "message_id": "m1",
            "users": [{"user_id": "u1", "user_properties": {"plan": "gold"}}],
        }
        resp = await client.post("/amplitude/cohorts", json=body)
        assert resp.status == 401
    assert await db.fetchval("SELECT count(*) FROM audiences") == 0
