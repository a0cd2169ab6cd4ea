"""The edge answers accepted changes only once a replica holds them (Redis ``WAIT``, default
settings): 503 to be retried when the replica does not confirm, no wait once it is gone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from schemas.settings import Settings
from tests.support.edge import Client, redis_int, running_edge
from tests.support.redis_keys import KEYS
from tests.support.worker import memberships, new_audience, stats
from tests.system.sentinels import SentinelGroup
from worker.drain import run_until_drained


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary and its replica, no sentinel."""
    group = SentinelGroup(tmp_path, sentinels=0)
    try:
        group.start()
        yield group
    finally:
        group.stop()


async def add(client: Client, audience_id: int, profile: str) -> Any:
    data = [{"action": "add", "profileIntegrationId": profile, "audienceId": audience_id}]
    return await client.post("/v2/customer_audiences", json={"data": data})


async def test_acknowledged_changes_are_on_the_replica(
    settings: Settings, db: asyncpg.Pool, key: str, pair: SentinelGroup
) -> None:
    primary, replica = pair.servers
    on_primary = settings.with_changes(redis_url=f"redis://127.0.0.1:{primary.port}/0")
    # The defaults users run.
    assert on_primary.redis_ack_replicas == 1
    assert on_primary.redis_ack_timeout_ms == 1000
    primary_client = aioredis.Redis(port=primary.port)
    replica_client = aioredis.Redis(port=replica.port)
    audience = await new_audience(db)
    try:
        async with running_edge(on_primary, key) as client:
            assert (await add(client, audience, "p1")).status == 204
            # Read from the replica right after the answer: WAIT made sure it is there.
            assert await redis_int(replica_client, KEYS.backlog_total) == 1

            # A replica that confirms nothing (stopped): the change is queued on the primary,
            # the client is told to retry.
            replica.signal(signal.SIGSTOP)
            try:
                refused = await add(client, audience, "p2")
                assert refused.status == 503
                assert refused.headers["Retry-After"] == "1"
                body = await refused.json()
                assert body["StatusCode"] == 503
                assert body["errors"][0]["title"] == "Not replicated"
                assert await redis_int(primary_client, KEYS.backlog_total) == 2
            finally:
                replica.signal(signal.SIGCONT)
            # The retry is queued again, at a newer version; both are acknowledged now.
            assert (await add(client, audience, "p2")).status == 204
            assert await redis_int(replica_client, KEYS.backlog_total) == 3

            # The replica is gone: the primary has none left, so the edge stops waiting (one
            # answer may still be the timeout, until it looks again).
            replica.kill()
            statuses = [(await add(client, audience, "p3")).status]
            if statuses[0] == 503:
                statuses.append((await add(client, audience, "p3")).status)
            assert statuses[-1] == 204, statuses

        await run_until_drained(on_primary)
        # The change sent twice applied as sent once: a member, at its newest version.
        assert set(await memberships(db, audience)) == {"p1", "p2", "p3"}
        assert all(member for member, _ in (await memberships(db, audience)).values())
        counted = await stats(primary_client, audience)
        accepted = 3 + len(statuses)
        assert counted["accepted"] == accepted
        assert counted.get("applied", 0) + counted.get("dropped", 0) == accepted
    finally:
        await primary_client.aclose()
        await replica_client.aclose()
