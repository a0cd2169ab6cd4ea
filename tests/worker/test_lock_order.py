"""Row locks in Postgres: clears (edge) and group commits (worker) on shared rows never deadlock."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ingest import store
from tests.support.status import wait_until
from tests.support.worker import memberships, new_audience
from worker.applier import UPSERT


async def blocked_on_a_lock(db: asyncpg.Pool, conn: asyncpg.Connection) -> bool:
    event = await db.fetchval(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
    )
    return bool(event == "Lock")


async def test_a_clear_and_a_batch_on_its_rows_never_deadlock(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           VALUES ($1, 'p0', true, 10), ($1, 'p1', true, 10)""",
        a,
    )
    async with db.acquire() as holder, db.acquire() as clearing, db.acquire() as applying:
        # Someone holds p0, so the clear stops at the first membership row it locks...
        held = holder.transaction()
        await held.start()
        await holder.execute(
            "SELECT 1 FROM memberships WHERE audience_id = $1 AND profile_id = 'p0' FOR UPDATE", a
        )
        clear = asyncio.create_task(store.clear_audience(clearing, a, 100, delete=False))
        await wait_until(lambda: blocked_on_a_lock(db, clearing), "the clear to wait for p0")
        # ...while a batch changes p1 and, like every batch, then touches the audience row.
        batch = asyncio.create_task(applying.fetch(UPSERT, [a], ["p1"], [True], [50]))

        async def batch_committed_or_waiting() -> bool:
            return batch.done() or await blocked_on_a_lock(db, applying)

        await wait_until(batch_committed_or_waiting, "the batch to commit or wait")
        await held.rollback()
        # Had the clear locked the audience row before the memberships (the batch's order
        # reversed), the two would wait for each other and Postgres would abort one.
        assert await clear is True
        assert [(r["audience_id"], r["profile_id"]) for r in await batch] == [(a, "p1")]
    assert await memberships(db, a) == {}
    assert await db.fetchval("SELECT cleared_version FROM audiences WHERE id = $1", a) == 100


async def test_batches_over_shared_audiences_never_deadlock(db: asyncpg.Pool) -> None:
    await db.execute(
        "INSERT INTO audiences (account_id, name) SELECT 1, 'a' || g FROM generate_series(1, 100) g"
    )
    small = [1, 2]
    large = list(range(1, 101))

    def upsert(conn: asyncpg.Connection, audiences: list[int], profile: str) -> Any:
        n = len(audiences)
        return conn.fetch(UPSERT, audiences, [profile] * n, [True] * n, [10] * n)

    async with db.acquire() as holder, db.acquire() as one, db.acquire() as other:
        # Audience 1 held elsewhere: both batches reach it with their membership rows written.
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM audiences WHERE id = 1 FOR NO KEY UPDATE")
        first = asyncio.create_task(upsert(one, small, "x"))
        await wait_until(lambda: blocked_on_a_lock(db, one), "the small batch to wait")
        second = asyncio.create_task(upsert(other, large, "y"))
        await wait_until(lambda: blocked_on_a_lock(db, other), "the large batch to wait")
        await held.rollback()
        # Postgres walks a batch's audiences in hash order, which differs between the two sets:
        # taken in that order, each batch would hold a row the other waits for.
        assert len(await first) == 2
        assert len(await second) == 100
    assert await db.fetchval("SELECT count(*) FROM memberships") == 102
