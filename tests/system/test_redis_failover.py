"""Redis Sentinel: the primary SIGKILLed mid-drain while senders post; the sentinels promote the
replica, the edge and the workers (on a ``redis+sentinel://`` URL, default settings) follow it by
themselves, and every change the edge acknowledged ends in Postgres.

``make test`` runs one failover; ``make test-faults`` (``COHORTSYNC_TEST_FAULTS=full``) two,
the killed primary restarted as the new one's replica in between, and longer sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from core import redisconn
from schemas.settings import Settings
from schemas.status import Status
from tests.bench.processes import until, wait_for_workers
from tests.support.admin import admin_runner
from tests.support.redis_keys import KEYS
from tests.system.fault_support import (
    Progress,
    Stack,
    counts,
    expect_health,
    scenario_stack,
    verify,
)
from tests.system.report import Row
from tests.system.senders import Edge, Ledger, Message, adds_and_deletes, send_all
from tests.system.sentinels import SentinelGroup, Server, sentinel_group

FULL = os.environ.get("COHORTSYNC_TEST_FAULTS") == "full"
FAILOVERS = 2 if FULL else 1
# Batches of 100 a second per sender: sending spans the failovers.
MESSAGES_PER_SENDER = 40 if FULL else 15
SENDERS = 3
WORKERS = 2
# What a user would set so the drain keeps up with the senders (600 changes/s).
RATE_PER_MINUTE = 36_000
DRAIN_TIMEOUT_S = 120.0
# The sentinels agree in a few seconds (their down-after is 1 s); the workers are healthy again
# and applying within this.
FAILOVER_LIMIT_S = 30.0
RECOVERY_S = 30.0
STALL_LIMIT_S = 15.0
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 5.0

pytestmark = pytest.mark.timeout(600 if FULL else 180)


@dataclass
class Probe:
    """One sender posting a one-profile batch every 50 ms, each until answered 200, noting when
    the edge answered anything else (or nothing): the edge's error window at a failover."""

    edge: Edge
    ledger: Ledger
    failures_at: list[float] = field(default_factory=list)
    answered_after: list[float] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n = 0
        async with aiohttp.ClientSession() as http:
            while not self.stop.is_set():
                message = Message("probe", n % 3 != 0, f"probe-{n}", (f"probe-p{n % 20}",))
                self.ledger.sending(message)
                while not await self._post(http, message):
                    self.failures_at.append(time.monotonic())
                    await asyncio.sleep(PROBE_INTERVAL_S)
                n += 1
                await asyncio.sleep(PROBE_INTERVAL_S)

    async def _post(self, http: aiohttp.ClientSession, message: Message) -> bool:
        self.ledger.deliveries += 1
        try:
            async with http.post(
                f"{self.edge.url}/amplitude/cohorts",
                json=message.body(),
                headers={"Authorization": f"ApiKey-v1 {self.edge.key}"},
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
            ) as response:
                if response.status == 200:
                    answer = await response.json()
                    self.ledger.acknowledged(message, int(answer["audienceId"]))
                    return True
                assert response.status == 503, await response.text()
                self.ledger.answers_5xx += 1
        except (aiohttp.ClientError, TimeoutError):
            pass
        self.ledger.deliveries_failed += 1
        return False

    def window(self, since: float) -> tuple[int, float]:
        """Failed answers after ``since`` and the seconds from ``since`` to the last of them."""
        after = [t for t in self.failures_at if t >= since]
        return len(after), (max(after) - since if after else 0.0)


@contextlib.asynccontextmanager
async def probing(edge: Edge, ledger: Ledger) -> AsyncIterator[Probe]:
    probe = Probe(edge, ledger)
    task = asyncio.create_task(probe.run())
    try:
        yield probe
    finally:
        probe.stop.set()
        await task


async def new_primary(group: SentinelGroup, old: Server) -> Server:
    """The server the sentinels promoted in place of ``old``."""
    while True:
        with contextlib.suppress(OSError, ConnectionError):
            found = await asyncio.to_thread(group.primary)
            if found is not old:
                return found
        await asyncio.sleep(0.05)


async def fail_over(
    group: SentinelGroup, stack: Stack, progress: Progress, probe: Probe, row: Row
) -> None:
    """SIGKILL the primary; note how long the sentinels took, how long the edge answered errors
    and that the workers are healthy again on the new primary."""
    old = group.primary()
    killed_at = time.monotonic()
    with progress.outage():
        old.kill()
        row.faults += 1
        async with asyncio.timeout(FAILOVER_LIMIT_S):
            await new_primary(group, old)
        promoted_s = time.monotonic() - killed_at
        row.problems += await expect_health(stack, healthy=True, within_s=RECOVERY_S)
    # Acknowledged after the failover: the edge writes to the new primary.
    acknowledged = len(probe.ledger.acknowledged_ids)
    await until(lambda: _grew(probe.ledger, acknowledged), timeout_s=RECOVERY_S, interval_s=0.05)
    failures, errors_for_s = probe.window(killed_at)
    row.notes.append(
        f"failover {row.faults}: new primary named {promoted_s:.1f} s after the SIGKILL; the edge"
        f" answered {failures} probe requests with 503 or no answer, the last"
        f" {errors_for_s:.1f} s after the SIGKILL"
    )


async def _grew(ledger: Ledger, than: int) -> bool:
    return len(ledger.acknowledged_ids) > than


async def applied_some(redis: aioredis.Redis) -> None:
    async def some() -> bool:
        return any(c.applied for c in (await counts(redis)).values())

    await until(some, timeout_s=30, interval_s=0.1)


async def status_is_true(settings: Settings, group: SentinelGroup, ledger: Ledger) -> None:
    """``cohortsync-admin status`` through the sentinels: nothing pending, every acknowledged
    change counted once, applied or found stale."""
    run = await admin_runner(settings.database_url, group.url)("status", "--json")
    assert run.code == 0, run.err
    status = msgspec.json.decode(run.out, type=Status)
    assert sum(a.pending for a in status.audiences) == 0
    assert sum(a.total for a in status.audiences) == ledger.changes_acknowledged
    assert sum(a.applied + a.dropped for a in status.audiences) == ledger.changes_acknowledged
    assert status.dead_letters == 0


async def test_primary_sigkilled_mid_drain_fails_over(
    settings: Settings, db: asyncpg.Pool, key: str, tmp_path: Path
) -> None:
    row = Row(f"Redis primary SIGKILL, Sentinel failover x{FAILOVERS}")
    ledger = Ledger()
    streams = [
        adds_and_deletes(
            6, sender, cohorts=2, profiles=1000, messages=MESSAGES_PER_SENDER, batch=100
        )
        for sender in range(SENDERS)
    ]
    with sentinel_group(tmp_path / "redis") as group:
        redis: aioredis.Redis = redisconn.connect(group.url, socket_timeout=5.0)
        try:
            async with (
                scenario_stack(
                    settings.database_url,
                    group.url,
                    tmp_path,
                    rate_limit_per_minute=RATE_PER_MINUTE,
                ) as stack,
                Progress(group.url) as progress,
            ):
                await stack.start_edge()
                for _ in range(WORKERS):
                    await stack.start_worker()
                await wait_for_workers(redis, KEYS, stack.workers)
                edge = Edge(stack.url, key)
                async with probing(edge, ledger) as probe:
                    sending = asyncio.create_task(
                        send_all(edge, streams, ledger, timeout_s=DRAIN_TIMEOUT_S, pace_s=1.0)
                    )
                    await applied_some(redis)
                    for n in range(FAILOVERS):
                        if n:
                            # The killed primary comes back; the sentinels make it the new
                            # primary's replica, the next one to be promoted.
                            killed = next(s for s in group.servers if not s.running)
                            await asyncio.to_thread(killed.start)
                            await asyncio.to_thread(group.wait_online, killed)
                            await asyncio.to_thread(group.wait_watching, 1)
                        await fail_over(group, stack, progress, probe, row)
                    await sending
                row.notes.append(f"probe: {len(probe.failures_at)} failed requests in all")
                await verify(
                    row,
                    ledger,
                    stack,
                    redis,
                    db,
                    progress,
                    stall_limit_s=STALL_LIMIT_S,
                    drain_timeout_s=DRAIN_TIMEOUT_S,
                )
            await status_is_true(settings, group, ledger)
        finally:
            await redis.aclose()
