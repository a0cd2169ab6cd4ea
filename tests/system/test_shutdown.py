"""SIGTERM to real processes: nothing acknowledged is lost, and both exit 0.

- The edge, while senders post batches: every batch answered 2xx is in the backlog, every other
  batch is there whole or not at all.
- A worker mid-drain: after a fresh worker drains what it handed back, every accepted change is
  applied exactly (the stored version of each profile is its last change's).
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from schemas import keys
from schemas.settings import Settings
from tests.support.edge import auth, backlog, create_key
from tests.support.process import free_port, service_env, spawn, stop, wait_ready
from tests.support.redis_keys import KEYS
from tests.support.status import wait_until
from tests.support.worker import accept, memberships, new_audience, stats
from worker.drain import run_until_drained

SENDERS = 4
BATCH = 250
# Batches acknowledged before the signal: the edge is busy when it arrives.
ACKED_BEFORE_SIGNAL = 20
MAX_BATCHES_PER_SENDER = 2000


async def test_edge_sigterm_under_load_keeps_every_acknowledged_batch(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db)
    _, key = await create_key(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    acked: list[list[str]] = []
    unanswered: list[list[str]] = []
    refused: list[tuple[int, str]] = []
    enough = asyncio.Event()

    async def sender(n: int, http: aiohttp.ClientSession) -> None:
        for b in range(MAX_BATCHES_PER_SENDER):
            profiles = [f"s{n}-{b}-{i}" for i in range(BATCH)]
            body = {
                "data": [
                    {"audienceId": audience, "action": "add", "profileIntegrationId": p}
                    for p in profiles
                ]
            }
            try:
                async with http.post(f"{url}/v2/customer_audiences", json=body) as response:
                    if response.status // 100 != 2:
                        refused.append((response.status, await response.text()))
                        unanswered.append(profiles)
                        return
            except (TimeoutError, aiohttp.ClientError):
                # Sent, maybe read, never answered: allowed either way, but whole.
                unanswered.append(profiles)
                return
            acked.append(profiles)
            if len(acked) >= ACKED_BEFORE_SIGNAL:
                enough.set()

    with tempfile.TemporaryFile() as log:
        env = service_env(settings, COHORTSYNC_HTTP_PORT=str(port), COHORTSYNC_LOG_LEVEL="WARNING")
        edge = await spawn("ingest.main", env, log)
        try:
            await wait_ready(url, edge)
            async with aiohttp.ClientSession(headers=auth(key)) as http:
                senders = [asyncio.create_task(sender(n, http)) for n in range(SENDERS)]
                await asyncio.wait_for(enough.wait(), 60)
                # One SIGTERM, as Kubernetes sends it, while the senders keep posting.
                stopping = asyncio.create_task(stop(edge))
                await asyncio.wait_for(asyncio.gather(*senders), 60)
                code = await stopping
        finally:
            if edge.returncode is None:
                edge.kill()
                await edge.wait()
        log.seek(0)
        errors = log.read().decode()
    assert code == 0, errors
    # Only the shutdown may have stopped the senders, never a refusal.
    assert refused == []
    assert len(unanswered) == SENDERS

    queued = [profile for _, profile, _ in await backlog(redis, audience)]
    assert len(queued) == len(set(queued))
    present = set(queued)
    missing = [p for batch in acked for p in batch if p not in present]
    assert missing == []
    for batch in unanswered:
        assert len(present.intersection(batch)) in (0, len(batch))
    assert len(present) == BATCH * len(acked) + sum(
        len(batch) for batch in unanswered if batch[0] in present
    )


async def test_worker_sigterm_mid_drain_loses_nothing(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db)
    added = await accept(redis, audience, [("add", f"p{i}") for i in range(300)])
    deleted = await accept(redis, audience, [("delete", f"p{i}") for i in range(60)])
    expected = {f"p{i}": (True, v) for i, v in enumerate(added)}
    expected |= {f"p{i}": (False, v) for i, v in enumerate(deleted)}
    # 360 changes at 3000/min take about 7 s: the signal comes long before the end.
    env = service_env(settings, COHORTSYNC_RATE_LIMIT_PER_MINUTE="3000")
    with tempfile.TemporaryFile() as log:
        worker = await spawn("worker.main", env, log)
        try:

            async def started_applying() -> bool:
                assert worker.returncode is None, "the worker exited"
                return len(await memberships(db, audience)) >= 30

            await wait_until(started_applying, "the first changes applied")
            assert len(await memberships(db, audience)) < 300
        finally:
            code = await stop(worker)
        log.seek(0)
        errors = log.read().decode()
    assert code == 0, errors
    stored_at_stop = await memberships(db, audience)
    assert len(stored_at_stop) < 300

    await run_until_drained(settings.with_changes(rate_limit_per_minute=0))
    assert await memberships(db, audience) == expected
    counters = await stats(redis, audience)
    # Each change counted once: applied, or dropped when it re-ran after its row committed.
    assert counters["accepted"] == 360
    assert counters.get("applied", 0) + counters.get("dropped", 0) == 360
    assert await arq_leftovers(redis) == []


async def arq_leftovers(redis: aioredis.Redis) -> list[Any]:
    """Jobs still on arq's queue and job keys left behind."""
    queued: list[Any] = await redis.zrange(KEYS.queue, 0, -1)
    job_keys = [k async for k in redis.scan_iter(match=keys.ARQ_JOB_PREFIX + "*")]
    return list(itertools.chain(queued, job_keys))
