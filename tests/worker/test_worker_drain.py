"""A worker in-process drains backlogs into Postgres: what was sent is what is stored."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis

from schemas import keys
from schemas.settings import Settings
from tests.support.redis_keys import KEYS, scripts
from tests.support.worker import accept, clear, memberships, new_audience, stats
from worker.dispatcher import Dispatcher
from worker.drain import is_drained, run_until_drained


def unlimited(settings: Settings) -> Settings:
    return settings.with_changes(rate_limit_per_minute=0)


async def test_drain_applies_adds_and_deletes(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db, "a")
    b = await new_audience(db, "b")
    await accept(redis, a, [("add", f"p{i}") for i in range(50)])
    await accept(redis, b, [("add", "x:1"), ("add", "x:2")])
    await accept(redis, a, [("delete", f"p{i}") for i in range(0, 50, 2)])

    await run_until_drained(unlimited(settings), timeout_s=30)

    rows = await memberships(db, a)
    assert {p for p, (member, _) in rows.items() if member} == {f"p{i}" for i in range(1, 50, 2)}
    assert {p for p, (member, _) in rows.items() if not member} == {
        f"p{i}" for i in range(0, 50, 2)
    }
    assert {p: m for p, (m, _) in (await memberships(db, b)).items()} == {
        "x:1": True,
        "x:2": True,
    }
    assert await is_drained(redis, KEYS)
    # Nothing of the jobs is left behind in Redis, and nothing got a TTL-less leftover key.
    assert await redis.keys(keys.ARQ_JOB_PREFIX + "*") == []
    assert await redis.keys(keys.ARQ_IN_PROGRESS_PREFIX + "*") == []
    # 75 changes for a, of which 25 adds were overtaken by deletes within one batch or applied
    # first and then overwritten: either way each change is counted once.
    counted = await stats(redis, a)
    assert counted["accepted"] == 75
    assert counted["applied"] + counted.get("dropped", 0) == 75
    assert counted["applied"] >= 50


async def test_same_request_twice_ends_in_senders_state(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    request: list[tuple[keys.Action, str]] = [("add", "p1"), ("delete", "p2"), ("add", "p3")]
    await accept(redis, a, request)
    await accept(redis, a, [("delete", "p1"), ("add", "p2")])
    await accept(redis, a, request)

    await run_until_drained(unlimited(settings), timeout_s=30)

    assert {p: m for p, (m, _) in (await memberships(db, a)).items()} == {
        "p1": True,
        "p2": False,
        "p3": True,
    }


async def test_clear_drops_older_backlog_entries(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    # Older than the clear: some already on arq's queue, some still in the backlog.
    await accept(redis, a, [("add", f"old{i}") for i in range(30)])
    small = settings.with_changes(dispatch_batch=10, dispatch_quantum=10)
    assert (await Dispatcher(scripts(redis), small).dispatch_once()).created == 10
    cleared = await clear(db, redis, a)
    newer = await accept(redis, a, [("add", "new1"), ("add", "old3")])
    assert min(newer) > cleared

    await run_until_drained(unlimited(settings), timeout_s=30)

    rows = await memberships(db, a)
    assert {p: m for p, (m, _) in rows.items()} == {"new1": True, "old3": True}
    assert all(version > cleared for _, version in rows.values())
    counted = await stats(redis, a)
    assert counted["applied"] == 2
    assert counted["dropped"] == 30


async def test_clear_with_nothing_newer_drops_the_whole_backlog(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", f"p{i}") for i in range(20)])
    await clear(db, redis, a)
    assert await redis.llen(KEYS.backlog(a)) == 0  # type: ignore[misc]

    await run_until_drained(unlimited(settings), timeout_s=30)

    assert await memberships(db, a) == {}


async def test_deleted_audience_changes_are_dropped(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db, "deleted")
    b = await new_audience(db, "live")
    await accept(redis, a, [("add", f"p{i}") for i in range(10)])
    await accept(redis, b, [("add", "q")])
    # Dispatch everything first, so the drop happens in Postgres rather than in the backlog.
    assert (await Dispatcher(scripts(redis), settings).dispatch_once()).created == 11
    await clear(db, redis, a, delete=True)
    # A change accepted after the delete (the edge refuses those, but a race can let one in).
    await accept(redis, a, [("add", "late")])
    await run_until_drained(unlimited(settings), timeout_s=30)

    assert await memberships(db, a) == {}
    assert {p: m for p, (m, _) in (await memberships(db, b)).items()} == {"q": True}
    assert (await stats(redis, a))["dropped"] == 11


async def test_small_audience_is_not_stuck_behind_a_large_one(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    large = await new_audience(db, "large")
    small = await new_audience(db, "small")
    await accept(redis, large, [("add", f"l{i}") for i in range(1500)])
    fair = settings.with_changes(rate_limit_per_minute=0, dispatch_watermark=50)
    # The large audience is already on arq's queue when the small one arrives.
    assert (await Dispatcher(scripts(redis), fair).dispatch_once()).created == 50
    await accept(redis, small, [("add", f"s{i}") for i in range(20)])

    await run_until_drained(fair, timeout_s=60)

    small_done = await db.fetchval(
        "SELECT max(updated_at) FROM memberships WHERE audience_id = $1", small
    )
    large_before = await db.fetchval(
        "SELECT count(*) FROM memberships WHERE audience_id = $1 AND updated_at <= $2",
        large,
        small_done,
    )
    assert len(await memberships(db, small)) == 20
    assert len(await memberships(db, large)) == 1500
    # Round-robin: the 20 small changes went in alongside about as many large ones, after the
    # 50 already queued; nowhere near the 1500 a FIFO would have put first.
    assert large_before < 200


async def test_dispatch_keeps_arq_queue_at_the_watermark(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", f"p{i}") for i in range(2000)])
    shallow = settings.with_changes(
        rate_limit_per_minute=0, dispatch_watermark=40, dispatch_batch=15
    )
    dispatcher = Dispatcher(scripts(redis), shallow)
    for _ in range(5):
        await dispatcher.dispatch_once()
    assert await redis.zcard(KEYS.queue) == 40
    assert (await dispatcher.dispatch_once()).created == 0

    # With a worker (and its dispatcher) running, the queue never grows past the watermark.
    drain = asyncio.create_task(run_until_drained(shallow, timeout_s=60))
    depths: list[int] = []
    while len(depths) < 100 or not await memberships(db, a):
        depths.append(await redis.zcard(KEYS.queue))
        assert await redis.llen(KEYS.backlog(a)) > 0  # type: ignore[misc]
        await asyncio.sleep(0.01)
    drain.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await drain
    assert max(depths) <= 40
    assert len(await memberships(db, a)) < 2000


async def test_replicas_take_turns_to_dispatch(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    await accept(redis, a, [("add", f"p{i}") for i in range(100)])
    dispatcher = Dispatcher(scripts(redis), unlimited(settings))
    # Another replica's turn: this one reads no heads and builds nothing, it only asks again.
    await redis.set(KEYS.dispatch_turn, 1, px=5000)
    waited = await dispatcher.dispatch_once()
    assert (waited.created, waited.short) == (0, True)
    assert await redis.llen(KEYS.backlog(a)) == 100  # type: ignore[misc]
    # The turn ends with the dispatch that took it, so the next one (any replica's) goes ahead.
    await redis.delete(KEYS.dispatch_turn)
    first = await dispatcher.dispatch_once()
    assert first.created == 100
    assert not await redis.exists(KEYS.dispatch_turn)
    # With nothing left to move, a turn taken is given back at once as well.
    assert (await dispatcher.dispatch_once()).created == 0
    assert not await redis.exists(KEYS.dispatch_turn)
