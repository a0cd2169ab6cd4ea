"""Two deployments on one Redis database (two ``COHORTSYNC_QUEUE_NAME``s): each keeps every key
under its own hash tag, and neither reads or writes the other's."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.crc import key_slot

from schemas.keys import Keys
from schemas.settings import Settings
from tests.support.admin import Admin
from tests.support.edge import Client, running_edge
from tests.support.status import post_changes
from tests.support.worker import memberships, new_audience
from worker.drain import run_until_drained

A, B = Keys("tenant-a"), Keys("tenant-b")


async def dump(redis: aioredis.Redis, keys: Keys) -> dict[bytes, bytes | None]:
    """Every key of one deployment with its serialized value."""
    names = [k async for k in redis.scan_iter(match=f"*{keys.tag}*", count=1000)]
    return {k: await redis.dump(k) for k in sorted(names)}


async def progress(client: Client) -> list[tuple[int, int, int, int]]:
    """(audience, total, applied, pending) per audience, from the edge's /v1/status."""
    response = await client.get("/v1/status")
    assert response.status == 200, await response.text()
    found = await response.json()
    return [(a["id"], a["total"], a["applied"], a["pending"]) for a in found["audiences"]]


async def admin_progress(admin: Admin, keys: Keys) -> list[tuple[int, int, int, int]]:
    run = await admin("status", "--json", COHORTSYNC_QUEUE_NAME=keys.namespace)
    assert run.code == 0, run.err
    found: dict[str, Any] = msgspec.json.decode(run.out)
    return [(a["id"], a["total"], a["applied"], a["pending"]) for a in found["audiences"]]


async def test_two_deployments_share_one_redis_and_never_touch_each_others_keys(
    settings: Settings, db: Any, redis: aioredis.Redis, key: str, admin: Admin
) -> None:
    own_a = settings.with_changes(queue_name=A.namespace, rate_limit_per_minute=0)
    own_b = settings.with_changes(queue_name=B.namespace, rate_limit_per_minute=0)
    # The same audience id in both, as two deployments with databases of their own would have.
    audience = await new_audience(db)
    async with running_edge(own_a, key) as edge_a, running_edge(own_b, key) as edge_b:
        await post_changes(edge_a, [(audience, "add", f"a{i}") for i in range(30)])
        await post_changes(edge_b, [(audience, "add", f"b{i}") for i in range(20)])
        assert await progress(edge_a) == [(audience, 30, 0, 30)]
        assert await progress(edge_b) == [(audience, 20, 0, 20)]

        # A's worker drains A's backlog and touches nothing of B's.
        b_before = await dump(redis, B)
        assert b_before
        await run_until_drained(own_a, timeout_s=30)
        assert await dump(redis, B) == b_before
        assert await progress(edge_a) == [(audience, 30, 30, 0)]
        assert await progress(edge_b) == [(audience, 20, 0, 20)]
        assert len(await memberships(db, audience)) == 30

        a_before = await dump(redis, A)
        assert a_before
        await run_until_drained(own_b, timeout_s=30)
        assert await progress(edge_b) == [(audience, 20, 20, 0)]
        assert await admin_progress(admin, B) == [(audience, 20, 20, 0)]
        assert await admin_progress(admin, A) == [(audience, 30, 30, 0)]
        assert await dump(redis, A) == a_before
    assert len(await memberships(db, audience)) == 50

    # Every key belongs to one deployment, and each deployment's keys share one cluster slot.
    names = [k.decode() async for k in redis.scan_iter(count=1000)]
    assert names
    for keys in (A, B):
        mine = [k for k in names if keys.tag in k]
        assert {key_slot(k.encode()) for k in mine} == {key_slot(keys.tag.encode())}
    assert [k for k in names if (A.tag in k) == (B.tag in k)] == []
