"""``cohortsync-admin migrate`` upgrades Redis from the key layout before namespaces: every queued,
running and dead-lettered change of the old layout is applied once afterwards, with its original
version, and a run interrupted anywhere then run again ends the same."""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import msgspec
import pytest
import redis.asyncio as aioredis

from admin.redis_upgrade import STEPS, legacy_job, old_job_ids, upgrade_redis
from core.scripts.upgrade import LegacyKeys, warn_if_pending
from schemas import keys
from schemas.jobs import DeadLetter
from schemas.keys import APPLY_FUNCTION
from schemas.settings import Settings
from tests.support.admin import Admin
from tests.support.redis_keys import KEYS, scripts
from tests.support.worker import accept, memberships, new_audience, stats
from worker.drain import run_until_drained

OLD = LegacyKeys(Settings().queue_name)
# Versions as accept.lua hands them out: Redis time in µs.
BASE_US = 1_764_000_000_000_000
SEEN_TTL_S = 3600
B_CHANGES = 1200
# Audience b was cleared after its first changes (in Postgres and in the old cleared hash).
B_CLEARED = 100

Rows = dict[str, tuple[bool, int]]


class Audiences(NamedTuple):
    a: int
    b: int
    c: int


def v(audience: int, n: int) -> int:
    """The version of an audience's n-th change; odd numbers between are free for clears."""
    return BASE_US + audience * 100_000 + 2 * n


def cleared_b(b: int) -> int:
    return v(b, B_CLEARED) - 1


def old_job(audience: int, profile: str, member: bool, version: int) -> bytes:
    """An arq job as the old dispatch.lua wrote it: the change as four positional arguments."""
    job = {"t": 1, "f": APPLY_FUNCTION, "a": [audience, profile, member, version]}
    return msgspec.msgpack.encode(job | {"et": version // 1000})


def old_id(audience: int, version: int) -> str:
    return f"cs:{audience}:{version}"


async def write_legacy(redis: aioredis.Redis, ids: Audiences) -> None:
    """What a deployment before namespaces left in Redis when it was stopped for the upgrade:
    a's changes partly queued as jobs, one running (leased), the rest in its backlog; b's all in
    its backlog, the first ones older than a clear; c's one change dead-lettered."""
    a, b, c = ids
    pipe = redis.pipeline(transaction=False)
    for n, profile in enumerate(["p1", "p2", "p3"], start=1):
        pipe.set(OLD.job(old_id(a, v(a, n))), old_job(a, profile, True, v(a, n)))
        pipe.zadd(OLD.queue, {old_id(a, v(a, n)): v(a, n) // 1000})
    pipe.set(OLD.job(old_id(a, v(a, 4))), old_job(a, "p4", True, v(a, 4)))
    pipe.set(OLD.retry(old_id(a, v(a, 4))), 2)
    pipe.zadd(OLD.leases, {old_id(a, v(a, 4)): int(time.time() * 1000) + 60_000})
    pipe.rpush(
        OLD.backlog(a),
        keys.encode_entry("delete", "p1", v(a, 5)),
        keys.encode_entry("add", "p5", v(a, 6)),
        keys.encode_entry("add", "p2", v(a, 7)),
    )
    pipe.hset(OLD.stats(a), mapping={"accepted": 7, "dispatched": 4})
    entries = [keys.encode_entry("add", f"q{n}", v(b, n)) for n in range(B_CHANGES)]
    pipe.rpush(OLD.backlog(b), *entries, keys.encode_entry("delete", "q150", v(b, B_CHANGES)))
    pipe.hset(OLD.stats(b), mapping={"accepted": B_CHANGES + 1})
    pipe.hset(OLD.cleared, mapping={b: cleared_b(b)})
    letter = DeadLetter(old_id(c, v(c, 1)), [c, "d1", True, v(c, 1)], "DataError: x", 1000)
    pipe.rpush(OLD.dead_letters, msgspec.json.encode(letter))
    pipe.hset(OLD.stats(c), mapping={"accepted": 1, "dead": 1})
    pipe.hset(OLD.versions, mapping={a: v(a, 7), b: v(b, B_CHANGES), c: v(c, 1)})
    pipe.rpush(OLD.active_list, a, b)
    pipe.sadd(OLD.active_set, a, b)
    pipe.set(OLD.backlog_total, 3 + B_CHANGES + 1)
    pipe.set(OLD.seen("msg-1"), 1, ex=SEEN_TTL_S)
    pipe.hset(OLD.config, mapping={"rate_per_minute": 0, "burst": 9, "workers_burst": 4})
    pipe.set(OLD.limiter, 123, px=60_000)
    pipe.zadd(OLD.workers, {f"{OLD.queue}:health-check:h:1:ab": 1})
    pipe.set(OLD.applied_second(int(time.time())), 5, ex=120)
    # What the upgraded deployment wrote before migrate ran: merged, not overwritten.
    pipe.hset(KEYS.versions, mapping={a: v(a, 7) + 1000, b: 5})
    pipe.hset(KEYS.config, mapping={"burst": 3})
    await pipe.execute()


@pytest.fixture
async def audiences(db: Any) -> Audiences:
    ids = Audiences(*[await new_audience(db, name) for name in "abc"])
    await db.execute(
        "UPDATE audiences SET cleared_version = $1 WHERE id = $2", cleared_b(ids.b), ids.b
    )
    return ids


def expected(ids: Audiences) -> dict[int, Rows]:
    """What the last version of each change says, once everything is applied."""
    a, b, c = ids
    rows_b: Rows = {f"q{n}": (True, v(b, n)) for n in range(B_CLEARED, B_CHANGES)}
    rows_b["q150"] = (False, v(b, B_CHANGES))
    return {
        a: {
            "p1": (False, v(a, 5)),
            "p2": (True, v(a, 7)),
            "p3": (True, v(a, 3)),
            "p4": (True, v(a, 4)),
            "p5": (True, v(a, 6)),
        },
        b: rows_b,
        c: {"d1": (True, v(c, 1))},
    }


async def snapshot(redis: aioredis.Redis) -> dict[str, tuple[str, Any, bool]]:
    """Every key: its type, its value read whole, whether it expires. The active list is read
    as a set: its round-robin order depends on the order audiences were moved in; the idle
    audiences without the time they went idle."""
    found: dict[str, tuple[str, Any, bool]] = {}
    for raw in sorted(await redis.keys("*")):
        name = raw.decode()
        kind = (await redis.type(name)).decode()
        value: Any
        if kind == "list":
            value = await redis.lrange(name, 0, -1)  # type: ignore[misc]
            if name == KEYS.tenant(1).active_list:
                value = sorted(value)
        elif kind == "hash":
            value = await redis.hgetall(name)  # type: ignore[misc]
        elif kind == "zset" and name == KEYS.tenant(1).audiences_idle:
            # Scored with the time each went idle: when the run moved it.
            value = await redis.zrange(name, 0, -1)
        elif kind == "zset":
            value = await redis.zrange(name, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await redis.smembers(name))  # type: ignore[misc]
        else:
            value = await redis.get(name)
        found[name] = (kind, value, await redis.ttl(name) > 0)
    return found


def unlimited(settings: Settings) -> Settings:
    return settings.with_changes(rate_limit_per_minute=0)


async def test_migrate_moves_the_old_layout_and_every_change_is_applied_once(
    settings: Settings, redis: aioredis.Redis, db: Any, admin: Admin, audiences: Audiences
) -> None:
    a, b, c = audiences
    await write_legacy(redis, audiences)

    run = await admin("migrate")
    assert run.code == 0, run.err
    assert (
        f"moved from the Redis layout before namespaces to {KEYS.tag}: 1,204 backlog entries, "
        "4 queued or running jobs re-queued as backlog entries, 1 dead letters, 1 Amplitude "
        "de-duplication keys, 3 counters of audiences, 3 audience versions, 1 audience clears, "
        "3 runtime settings"
    ) in run.out
    assert "dropped 3 old keys" in run.out
    assert await redis.keys("cs:*") == []
    assert await redis.keys("arq:*") == []
    assert await redis.exists(OLD.queue) == 0

    # The jobs went back ahead of the backlog they had left: a's entries in version order.
    backlog_a = await redis.lrange(KEYS.backlog(a), 0, -1)  # type: ignore[misc]
    assert [keys.decode_entry(e.decode())[2] for e in backlog_a] == [v(a, n) for n in range(1, 8)]
    assert int(await redis.get(KEYS.backlog_total)) == 3 + B_CHANGES + 1 + 4
    assert await stats(redis, a) == {"accepted": 7, "dispatched": 0}
    assert await redis.hgetall(KEYS.versions) == {  # type: ignore[misc]
        str(a).encode(): str(v(a, 7) + 1000).encode(),
        str(b).encode(): str(v(b, B_CHANGES)).encode(),
        str(c).encode(): str(v(c, 1)).encode(),
    }
    assert await redis.hget(KEYS.cleared, str(b)) == str(cleared_b(b)).encode()  # type: ignore[misc]
    assert await redis.hgetall(KEYS.config) == {  # type: ignore[misc]
        b"rate_per_minute": b"0",
        b"burst": b"3",
        b"workers_burst": b"4",
    }
    assert SEEN_TTL_S - 60 < await redis.ttl(KEYS.tenant(1).seen("msg-1")) <= SEEN_TTL_S
    [raw_letter] = await redis.lrange(KEYS.dead_letters, 0, -1)  # type: ignore[misc]
    assert msgspec.json.decode(raw_letter, type=DeadLetter).job_id == KEYS.job_id(c, v(c, 1))

    moved = await snapshot(redis)
    again = await admin("migrate")
    assert again.code == 0, again.err
    assert again.out.strip().endswith("is up to date")
    assert len(again.out.splitlines()) == 1
    assert await snapshot(redis) == moved

    await run_until_drained(unlimited(settings), timeout_s=60)
    replayed = await admin("dead-letters", "replay")
    assert replayed.code == 0, replayed.err
    assert "re-queued 1 dead-lettered changes" in replayed.out
    await run_until_drained(unlimited(settings), timeout_s=30)

    for audience, rows in expected(audiences).items():
        assert await memberships(db, audience) == rows, audience
        counted = await stats(redis, audience)
        assert counted.get("applied", 0) + counted.get("dropped", 0) == counted["accepted"]
        assert counted.get("dead", 0) == 0
    assert (await stats(redis, b))["dropped"] >= B_CLEARED
    # Amplitude's retry of a batch accepted before the upgrade is still a duplicate.
    accepted = await scripts(redis).backlogs.accept({a: ["ap9"]}, 10**6, message_id="msg-1")
    assert accepted[:2] == ("seen", 0)


async def stop_partway(step: str, redis: aioredis.Redis, ids: Audiences) -> None:
    """Run migrate's steps before ``step`` whole and ``step`` partway, as a crash would leave
    them (each batch is one script, atomic: a crash falls between two)."""
    upgrade = scripts(redis).upgrade
    for earlier in list(STEPS)[: list(STEPS).index(step)]:
        await STEPS[earlier](redis, upgrade)
    if step == "versions":
        assert await upgrade.versions([str(ids.a).encode()]) == 1
    elif step == "stats":
        assert await upgrade.stats(ids.a, [b"accepted"]) == 1
    elif step == "backlogs":
        assert await upgrade.backlog(ids.b, 300) == await upgrade.backlog(ids.b, 300) == 300
    elif step == "jobs":
        job_ids = (await old_job_ids(redis, upgrade))[:2]
        payloads = await redis.mget([OLD.job(job_id) for job_id in job_ids])
        jobs = [legacy_job(j, p, upgrade) for j, p in zip(job_ids, payloads, strict=True)]
        assert await upgrade.jobs(jobs) == (2, 0)


@pytest.mark.parametrize("step", ["versions", "stats", "backlogs", "jobs", "finish"])
async def test_an_interrupted_migrate_then_a_whole_one_ends_the_same(
    step: str, redis: aioredis.Redis, admin: Admin, audiences: Audiences
) -> None:
    await write_legacy(redis, audiences)
    assert (await admin("migrate")).code == 0
    whole = await snapshot(redis)

    await redis.flushdb()
    await write_legacy(redis, audiences)
    await stop_partway(step, redis, audiences)
    run = await admin("migrate")
    assert run.code == 0, run.err
    assert await snapshot(redis) == whole


async def test_an_unreadable_old_job_is_kept_as_a_dead_letter(
    redis: aioredis.Redis, admin: Admin, audiences: Audiences
) -> None:
    a = audiences.a
    job_id = old_id(a, v(a, 1))
    await redis.set(OLD.job(job_id), b"\xc1 not msgpack")
    await redis.zadd(OLD.queue, {job_id: 1})
    await redis.hset(OLD.stats(a), mapping={"accepted": 1, "dispatched": 1})  # type: ignore[misc]
    await redis.set(OLD.backlog_total, 0)

    run = await admin("migrate")
    assert run.code == 0, run.err
    assert "1 dead letters" in run.out
    [raw] = await redis.lrange(KEYS.dead_letters, 0, -1)  # type: ignore[misc]
    letter = msgspec.json.decode(raw, type=DeadLetter)
    assert (letter.job_id, letter.args) == (KEYS.job_id(a, v(a, 1)), [])
    assert "unreadable job" in letter.error
    assert await stats(redis, a) == {"accepted": 1, "dispatched": 1, "dead": 1}
    assert await redis.keys("cs:*") == await redis.keys("arq:*") == []


async def test_the_worker_warns_at_start_up_while_the_old_layout_waits(
    settings: Settings,
    redis: aioredis.Redis,
    admin: Admin,
    audiences: Audiences,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await write_legacy(redis, audiences)
    upgrade = scripts(redis).upgrade

    def warnings() -> list[str]:
        found = [
            r.getMessage() for r in caplog.records if "cohortsync-admin migrate" in r.getMessage()
        ]
        caplog.clear()
        return found

    with caplog.at_level(logging.WARNING):
        await run_until_drained(unlimited(settings), timeout_s=30)
        [warned] = warnings()
        assert OLD.backlog_total in warned
        assert KEYS.tag in warned
        # The edge calls the same check at start-up (ingest/main.py).
        await warn_if_pending(upgrade, logging.getLogger("cohortsync.edge"))
        assert len(warnings()) == 1

        assert (await admin("migrate")).code == 0
        assert not await upgrade.pending()
        await warn_if_pending(upgrade, logging.getLogger("cohortsync.edge"))
        await run_until_drained(unlimited(settings), timeout_s=60)
        assert warnings() == []


async def test_migrate_makes_the_keys_from_before_tenants_the_default_tenants(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    """A deployment stopped with work queued under the namespace's keys from before tenants
    (one round-robin, one set of aggregates): after migrate it is all the default tenant's,
    scheduled, counted once, and every change is applied."""
    a, b = await new_audience(db, "a"), await new_audience(db, "b")
    await accept(redis, a, [("add", f"p{i}") for i in range(30)])
    await accept(redis, b, [("add", f"q{i}") for i in range(20)])
    await scripts(redis).dispatch(watermark=10, batch=10, quantum=5)
    fleet = await redis.hgetall(KEYS.totals)  # type: ignore[misc]
    # Back to the layout before tenants: the tenant's keys under their old names, no tenants.
    t, old = KEYS.tenant(1), scripts(redis).upgrade.pre_tenant
    for new_name, old_name in (
        (t.active_list, old.active_list),
        (t.active_set, old.active_set),
        (t.audiences_idle, old.audiences_idle),
    ):
        if await redis.exists(new_name):
            await redis.rename(new_name, old_name)
    await redis.delete(
        t.totals, t.audiences_pending, KEYS.tenants_due, KEYS.tenants_pending, KEYS.tenants_known
    )
    active = await redis.lrange(old.active_list, 0, -1)  # type: ignore[misc]
    assert active

    moved = await upgrade_redis(scripts(redis))
    assert moved.active_audiences == len(active)
    assert await redis.lrange(t.active_list, 0, -1) == active  # type: ignore[misc]
    assert not await redis.exists(old.active_list, old.active_set, old.audiences_idle)
    own = await redis.hgetall(t.totals)  # type: ignore[misc]
    assert own == fleet
    assert await redis.zrange(t.audiences_pending, 0, -1, withscores=True) == (
        await redis.zrange(KEYS.audiences_pending, 0, -1, withscores=True)
    )
    assert await redis.zscore(KEYS.tenants_pending, "1") == 50
    assert await redis.zscore(KEYS.tenants_due, "1") is not None
    # Run again: nothing moves, nothing counts twice.
    again = await upgrade_redis(scripts(redis))
    assert again.active_audiences == 0
    assert await redis.hgetall(t.totals) == own  # type: ignore[misc]

    await run_until_drained(settings.with_changes(rate_limit_per_minute=0), timeout_s=60)
    assert len(await memberships(db, a)) == 30
    assert len(await memberships(db, b)) == 20
    assert int(await redis.hget(t.totals, "applied")) == 50  # type: ignore[misc]
