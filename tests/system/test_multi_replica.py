"""Several worker processes on one backlog: exact final state, one shared rate, runtime changes."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from admin.tenants import add_tenant
from schemas import keys
from schemas.settings import Settings
from tests.bench.processes import (
    Child,
    Children,
    children,
    environment,
    free_port,
    until,
    wait_for_workers,
)
from tests.support.admin import Admin
from tests.support.process import health_keys, service_env, spawn, stop
from tests.support.redis_keys import KEYS
from tests.support.status import samples, value
from tests.support.worker import accept, memberships, new_audience
from worker.drain import is_drained

BURST = Settings().rate_burst


class Replica:
    """A worker process with its own metrics port: what it did, read from its /metrics."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port

    async def finished(self, http: aiohttp.ClientSession) -> int:
        """Jobs this replica ran to the end, each after taking a rate-limit slot: applied, or
        found superseded by a newer change."""
        async with http.get(f"http://127.0.0.1:{self.port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        found = samples(text)
        applied = value(found, "cohortsync_changes_applied_total")
        stale = value(found, "cohortsync_changes_dropped_total", reason="stale")
        assert applied is not None, text
        assert stale is not None, text
        return int(applied + stale)


async def start_replicas(
    group: Children, settings: Settings, redis: aioredis.Redis, count: int, **env: str | int
) -> list[Replica]:
    replicas = []
    for _ in range(count):
        port = free_port()
        child = await group.worker(
            environment(
                settings.database_url,
                settings.redis_url,
                http_host="127.0.0.1",
                worker_metrics_port=port,
                **env,
            )
        )
        replicas.append(Replica(child, port))
    await wait_for_workers(redis, KEYS, [r.child for r in replicas])
    return replicas


async def finished(http: aiohttp.ClientSession, replicas: list[Replica]) -> list[int]:
    return [await r.finished(http) for r in replicas]


async def total_at_least(http: aiohttp.ClientSession, replicas: list[Replica], n: int) -> bool:
    return sum(await finished(http, replicas)) >= n


async def slowed_to_a_trickle(http: aiohttp.ClientSession, replicas: list[Replica]) -> bool:
    """No more than a few jobs finished in the last second: no fast slot is left."""
    before = sum(await finished(http, replicas))
    await asyncio.sleep(1)
    return sum(await finished(http, replicas)) - before <= 3


async def test_three_replicas_drain_exactly_within_the_shared_rate(
    settings: Settings, db: Any, redis: aioredis.Redis, tmp_path: Path
) -> None:
    rng = random.Random(7)
    audiences = [await new_audience(db, "a"), await new_audience(db, "b")]
    sent: list[tuple[int, keys.Action, str, int]] = []
    # Requests alternate between audiences; profiles repeat, so a change applied over a newer
    # one, or lost, shows in the final state.
    for request in range(12):
        audience = audiences[request % 2]
        changes: list[tuple[keys.Action, str]] = [
            (rng.choice(("add", "delete")), f"p{rng.randrange(150)}") for _ in range(125)
        ]
        sent += [
            (audience, action, profile, version)
            for (action, profile), version in zip(
                changes, await accept(redis, audience, changes), strict=True
            )
        ]
    expected: dict[int, dict[str, tuple[bool, int]]] = {a: {} for a in audiences}
    for audience, action, profile, version in sent:
        expected[audience][profile] = (action == "add", version)
    rate_per_minute = 1200

    async with children(tmp_path) as group, aiohttp.ClientSession() as http:
        replicas = await start_replicas(
            group, settings, redis, 3, rate_limit_per_minute=rate_per_minute
        )
        started = time.monotonic()
        await until(partial(total_at_least, http, replicas, 120), timeout_s=60)
        limited = sum(await finished(http, replicas))
        elapsed_s = time.monotonic() - started
        # One limit for all three, however many jobs each holds: a margin for timer slack.
        assert limited <= rate_per_minute / 60 * elapsed_s + BURST + 20

        # Lift the limit for the rest, so the test does not wait a minute.
        await redis.hset(KEYS.config, "rate_per_minute", "0")  # type: ignore[misc]

        async def drained() -> bool:
            return await is_drained(redis, KEYS)

        await until(drained, timeout_s=60, interval_s=0.1)
        per_replica = await finished(http, replicas)
        for r in replicas:
            assert await r.child.stop() == 0, r.child.log()

    for audience in audiences:
        assert await memberships(db, audience) == expected[audience]
    # Every change ran to the end exactly once, and all three replicas took part.
    assert sum(per_replica) == len(sent)
    assert min(per_replica) > 0, per_replica
    assert await redis.llen(KEYS.dead_letters) == 0  # type: ignore[misc]


async def test_runtime_rate_change_reaches_running_replicas(
    settings: Settings, db: Any, redis: aioredis.Redis, admin: Admin, tmp_path: Path
) -> None:
    audience = await new_audience(db)
    async with children(tmp_path) as group, aiohttp.ClientSession() as http:
        replicas = await start_replicas(group, settings, redis, 2, rate_limit_per_minute=60)
        started = time.monotonic()
        await accept(redis, audience, [("add", f"p{i}") for i in range(3000)])
        await until(partial(total_at_least, http, replicas, 1), timeout_s=30)
        slow = await finished(http, replicas)
        assert sum(slow) <= (time.monotonic() - started) + BURST + 5

        run = await admin("set-rate", "6000")
        assert run.code == 0, run.err
        # 300 more would take five minutes at 60/min; each replica must have sped up.
        await until(partial(total_at_least, http, replicas, sum(slow) + 300), timeout_s=30)
        fast = await finished(http, replicas)
        assert all(after - before >= 20 for before, after in zip(slow, fast, strict=True)), (
            slow,
            fast,
        )

        run = await admin("set-rate", "60")
        assert run.code == 0, run.err
        # Slots booked at the fast rate, a couple of seconds ahead at most, are used first.
        await until(partial(slowed_to_a_trickle, http, replicas), timeout_s=10)
        before = sum(await finished(http, replicas))
        window_started = time.monotonic()
        await asyncio.sleep(4)  # the window the slow rate is measured over
        after = sum(await finished(http, replicas))
        window_s = time.monotonic() - window_started
        assert after - before <= window_s + BURST + 20
        for r in replicas:
            assert await r.child.stop() == 0, r.child.log()


async def test_raising_a_slow_rate_takes_effect_within_seconds(
    settings: Settings, db: Any, redis: aioredis.Redis, admin: Admin, tmp_path: Path
) -> None:
    audience = await new_audience(db)
    async with children(tmp_path) as group, aiohttp.ClientSession() as http:
        replicas = await start_replicas(group, settings, redis, 2, rate_limit_per_minute=60)
        await accept(redis, audience, [("add", f"p{i}") for i in range(3000)])
        # The burst is spent: from here on the limiter is booked ahead at 60/min.
        await until(partial(total_at_least, http, replicas, BURST + 2), timeout_s=30)
        before = sum(await finished(http, replicas))

        run = await admin("set-rate", "6000")
        assert run.code == 0, run.err
        # Slots the replicas booked at 60/min (a couple of seconds each) come first, then 100 a
        # second; at 60/min this would take five minutes.
        await until(partial(total_at_least, http, replicas, before + 300), timeout_s=10)


async def test_rate_holds_across_worker_processes(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db)
    await accept(redis, audience, [("add", f"p{i}") for i in range(400)])
    rate_per_minute, burst = 600, settings.rate_burst
    # service_env turns the metrics port off: two replicas share this host.
    env = service_env(
        settings,
        COHORTSYNC_RATE_LIMIT_PER_MINUTE=str(rate_per_minute),
        COHORTSYNC_LOG_LEVEL="WARNING",
    )
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        workers = [await spawn("worker.main", env, log) for _ in range(2)]
        try:
            # Each replica keeps its own health key while it runs.
            while (
                health := await health_keys(redis, KEYS, [w.pid for w in workers])
            ) is None or await redis.exists(*health) < 2:
                assert all(w.returncode is None for w in workers)
                await asyncio.sleep(0.05)
            # The window the shared rate is measured over.
            await asyncio.sleep(max(0.0, started + 5 - time.monotonic()))
            applied = await db.fetchval(
                "SELECT count(*) FROM memberships WHERE audience_id = $1", audience
            )
            elapsed = time.monotonic() - started
        finally:
            codes = [await stop(w) for w in workers]
        log.seek(0)
        errors = log.read().decode()
    assert codes == [0, 0], errors
    assert await redis.exists(*health) == 0
    # One process alone could apply 600/min; two limited separately would apply twice that.
    assert 0 < applied <= rate_per_minute / 60 * elapsed + burst + 10


async def test_each_tenant_gets_its_own_rate_across_replicas(
    settings: Settings, db: Any, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Two tenants at their own rates (set in Postgres), three worker processes: over a window
    each tenant's applied changes, summed over all replicas, are its rate, within its burst,
    and reach at least 99 % of it while it has work."""
    rates = {"slow.talon.one": 600, "fast.talon.one": 1800}
    tenants = {h: await add_tenant(db, h, 1, rate_per_minute=r, burst=1) for h, r in rates.items()}
    for host, tenant in tenants.items():
        audience = await db.fetchval(
            "INSERT INTO audiences (account_id, name, tenant_id) VALUES (1, $1, $2) RETURNING id",
            host,
            tenant.id,
        )
        await accept(redis, audience, [("add", f"p{i}") for i in range(3000)], tenant=tenant.id)

    async def applied() -> dict[str, int]:
        found = {}
        for host, tenant in tenants.items():
            raw = await redis.hget(KEYS.tenant(tenant.id).totals, "applied")  # type: ignore[misc]
            found[host] = int(raw or 0)
        return found

    async with children(tmp_path) as group:
        replicas = await start_replicas(group, settings, redis, 3)

        async def started() -> bool:
            return all(n > 0 for n in (await applied()).values())

        await until(started, timeout_s=30)
        await asyncio.sleep(2)  # past the start: the window measures the steady rate
        before, t0 = await applied(), time.monotonic()
        await asyncio.sleep(15)
        after, t1 = await applied(), time.monotonic()
        for r in replicas:
            assert await r.child.stop() == 0, r.child.log()
    for host, rate in rates.items():
        expected = rate / 60 * (t1 - t0)
        got = after[host] - before[host]
        # Within its rate (and its burst of 1, and the window's edges' one slot each side),
        # and at least 99 % of it.
        assert 0.99 * expected - 2 <= got <= expected + 3, (host, got, expected)
