"""``cohortsync-admin`` against real Postgres and Redis: its ``main`` in-process (the console
script as a process: tests/system/test_admin_main.py)."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from admin.tenants import add_tenant
from core.scripts.dispatch import Rate
from schemas import apikeys
from schemas.keys import Keys
from schemas.settings import Settings
from tests.support.admin import Admin
from tests.support.redis_keys import KEYS
from tests.support.worker import accept, new_audience
from worker.rates import TenantRates


async def test_revoke_key_by_prefix_or_id(admin: Admin, db: asyncpg.Pool) -> None:
    first = (await admin("create-key", "one")).out.strip()
    second = (await admin("create-key", "two")).out.strip()

    run = await admin("revoke-key", first[:8])
    assert run.code == 0, run.err
    revoked = await db.fetch("SELECT name FROM api_keys WHERE revoked_at IS NOT NULL")
    assert [r["name"] for r in revoked] == ["one"]

    second_id = await db.fetchval("SELECT id FROM api_keys WHERE name = 'two'")
    run = await admin("revoke-key", str(second_id))
    assert run.code == 0, run.err
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 0
    assert second.startswith(apikeys.KEY_PREFIX)

    listed = (await admin("list-keys")).out.splitlines()
    assert len(listed) == 3
    assert not any(line.endswith(" -") for line in listed)  # both show a revocation time


async def test_revoke_unknown_key_fails_clearly(admin: Admin, db: asyncpg.Pool) -> None:
    await admin("create-key", "kept")
    run = await admin("revoke-key", "cs_nomatch")
    assert run.code == 1
    assert "no API key matches 'cs_nomatch'" in run.err
    assert "Traceback" not in run.err
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 1


async def _config(redis: aioredis.Redis) -> dict[bytes, bytes]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(KEYS.config)
        replies: list[dict[bytes, bytes]] = await pipe.execute()
    return replies[0]


async def test_set_rate_overrides_the_shared_limiter(
    admin: Admin, redis: aioredis.Redis, db: asyncpg.Pool, settings: Settings
) -> None:
    # What every worker replica dispatches at, read again each second (worker/rates.py).
    rates = TenantRates(settings.with_changes(rate_limit_per_minute=1000), redis, KEYS, db)

    run = await admin("set-rate", "600", "--burst", "5")
    assert run.code == 0, run.err
    assert await _config(redis) == {b"rate_per_minute": b"600", b"burst": b"5"}
    await rates.refresh()
    assert rates.of(1) == Rate(600, 5)
    await redis.delete(KEYS.config)  # published by the refresh beside the override
    await admin("set-rate", "600", "--burst", "5")

    run = await admin("set-rate", "1200")
    assert run.code == 0, run.err
    assert await _config(redis) == {b"rate_per_minute": b"1200", b"burst": b"5"}

    run = await admin("set-rate", "--reset")
    assert run.code == 0, run.err
    assert await redis.exists(KEYS.config) == 0
    await rates.refresh()
    assert rates.of(1).per_minute == 1000

    run = await admin("set-rate")
    assert run.code == 1
    assert "PER_MINUTE" in run.err


async def test_status_shows_live_audiences_and_queue(
    admin: Admin, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    # An id and a queue of its own, which no other test's workers touch.
    live = await db.fetchval(
        "INSERT INTO audiences (id, account_id, name) VALUES (900001, 1, 'Binge watchers') "
        "RETURNING id"
    )
    await db.execute(
        "INSERT INTO audiences (account_id, name, deleted_at) VALUES (1, 'Gone', now())"
    )
    queue = "cohortsync-admin-test:queue"
    own = Keys(queue)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.rpush(own.backlog(live), "a1:R1", "a2:R2", "d3:R1")
        pipe.hset(own.stats(live), mapping={"accepted": 10, "dispatched": 7, "applied": 6})
        pipe.set(own.backlog_total, 3)
        pipe.zadd(own.queue, {own.job_id(1, 1): 1, own.job_id(1, 2): 2})
        await pipe.execute()

    run = await admin("status", COHORTSYNC_QUEUE_NAME=queue)
    assert run.code == 0, run.err
    rows = {line.split()[0]: line.split() for line in run.out.splitlines() if line.strip()}
    # pending: 3 in the backlog and 1 dispatched but not applied; 4 at 1000/min take 0.24 s.
    assert rows[str(live)] == [str(live), "Binge", "watchers", "4", "6", "10", "0", "0", "0", "s"]
    assert "Gone" not in run.out
    assert f"backlog 3, ready 2, in flight 0, deferred 0 (arq queue {queue})" in run.out


async def test_bad_setting_exits_2_naming_the_variable(admin: Admin) -> None:
    run = await admin("status", COHORTSYNC_RATE_BURST="-1")
    assert run.code == 2
    assert "COHORTSYNC_RATE_BURST" in run.err
    assert "Traceback" not in run.err


async def test_unreachable_database_names_host_never_password(admin: Admin) -> None:
    run = await admin(
        "list-keys", COHORTSYNC_DATABASE_URL="postgresql://ops:hunter2@127.0.0.1:1/cohortsync"
    )
    assert run.code == 1
    assert "cannot reach Postgres at 127.0.0.1:1/cohortsync" in run.err
    assert "hunter2" not in run.err
    assert "Traceback" not in run.err


async def test_status_of_one_tenant_and_of_the_fleet(
    admin: Admin, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    acme = await add_tenant(db, "acme.europe-west1.talon.one", account_id=7)
    mine = await db.fetchval(
        "INSERT INTO audiences (account_id, name, tenant_id) VALUES (7, 'Acme buyers', $1) "
        "RETURNING id",
        acme.id,
    )
    theirs = await new_audience(db, "Default cohort")
    await accept(redis, mine, [("add", f"p{i}") for i in range(12)], tenant=acme.id)
    await accept(redis, theirs, [("add", f"q{i}") for i in range(30)])

    run = await admin("status", "--tenant", "ACME.europe-west1.talon.one")
    assert run.code == 0, run.err
    assert "Acme buyers" in run.out
    assert "Default cohort" not in run.out
    assert "all audiences: accepted 12," in run.out

    run = await admin("status")
    assert run.code == 0, run.err
    assert "Acme buyers" in run.out
    assert "Default cohort" in run.out
    tenants = run.out.split("tenants with work, busiest first:")[1].split()
    assert tenants.index("default") < tenants.index("acme.europe-west1.talon.one")

    run = await admin("status", "--tenant", "nobody.talon.one")
    assert run.code == 2
    assert "no tenant 'nobody.talon.one'" in run.err
