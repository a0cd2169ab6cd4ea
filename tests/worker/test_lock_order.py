"""Row locks in Postgres: clears (edge), group commits and sweeps (worker) on shared rows never
deadlock, and the kept member counts stay exact while they race."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from core.clears import clear_audience
from schemas.keys import DEFAULT_TENANT
from tests.support.status import wait_until
from tests.support.worker import current_count, new_audience
from worker.applier import UPSERT


async def blocked_on_a_lock(db: asyncpg.Pool, conn: asyncpg.Connection) -> bool:
    event = await db.fetchval(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
    )
    return bool(event == "Lock")


def version_of(value: int) -> Callable[[], Awaitable[int]]:
    async def take() -> int:
        return value

    return take


async def test_a_clear_waits_for_no_membership_row(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           VALUES ($1, 'p0', true, 10), ($1, 'p1', true, 10)""",
        a,
    )
    async with db.acquire() as holder, db.acquire() as clearing:
        # A batch holds p0 (and would take the audience row next): the clear, which locks only
        # the audience row, does not wait for it.
        held = holder.transaction()
        await held.start()
        await holder.execute(
            "SELECT 1 FROM memberships WHERE audience_id = $1 AND profile_id = 'p0' FOR UPDATE", a
        )
        cleared = await clear_audience(
            clearing, a, version_of(100), delete=False, tenant=DEFAULT_TENANT
        )
        await held.rollback()
    assert cleared == 100
    assert await current_count(db, a) == 0
    assert await db.fetchval("SELECT cleared_version FROM audiences WHERE id = $1", a) == 100


# The worker's batch, and any other statement writing memberships (the count triggers lock the
# audience rows themselves).
WRITES = {
    "batch": UPSERT,
    "plain": """INSERT INTO memberships (audience_id, profile_id, member, version)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::bigint[])
        ON CONFLICT (audience_id, profile_id) DO UPDATE
        SET member = EXCLUDED.member, version = EXCLUDED.version RETURNING 1""",
    "insert only": """INSERT INTO memberships (audience_id, profile_id, member, version)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::bigint[])
        ON CONFLICT DO NOTHING RETURNING 1""",
}


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_batch_racing_a_clear_counts_against_the_clear(
    db: asyncpg.Pool, write: str
) -> None:
    a = await new_audience(db)
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           VALUES ($1, 'p0', true, 10)""",
        a,
    )
    assert await current_count(db, a) == 1
    version_taken = asyncio.Event()
    release = asyncio.Event()

    async def slow_version() -> int:
        # Redis answering while the clear holds the audience row.
        version_taken.set()
        await release.wait()
        return 100

    async with db.acquire() as clearing, db.acquire() as applying:
        clear = asyncio.create_task(
            clear_audience(clearing, a, slow_version, delete=False, tenant=DEFAULT_TENANT)
        )
        await version_taken.wait()
        # Read before the clear commits, the batch's rows pass its cleared_version check: one
        # older than the clear (accepted before it), one newer (accepted after).
        batch = asyncio.create_task(
            applying.fetch(
                WRITES[write], [a, a, a], ["p0", "p1", "p2"], [True, True, True], [60, 50, 200]
            )
        )
        await wait_until(lambda: blocked_on_a_lock(db, applying), "the batch to wait")
        release.set()
        assert await clear == 100
        assert len(await batch) == (2 if write == "insert only" else 3)
    # Only the change newer than the clear counts, in the view and in the kept count.
    assert await current_count(db, a) == 1
    current = await db.fetch("SELECT profile_id FROM current_memberships WHERE audience_id = $1", a)
    assert [r["profile_id"] for r in current] == ["p2"]


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
