"""Kept member counts (migration 0005) and the sweeper: exact whatever the order changes, clears,
deletes and sweeps reach Postgres in, and a clear never brings a swept or cleared member back."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from core.clears import clear_audience
from schemas.jobs import Change
from schemas.keys import DEFAULT_TENANT
from tests.support.status import wait_until
from tests.support.worker import current_count, new_audience, sweep_all
from worker.applier import UPSERT, Applier
from worker.sweeper import Sweeper, sweep_once


def version_of(value: int) -> Callable[[], Awaitable[int]]:
    async def take() -> int:
        return value

    return take


async def rows(db: asyncpg.Pool, audience_id: int) -> dict[str, tuple[bool, int]]:
    found = await db.fetch(
        "SELECT profile_id, member, version FROM memberships WHERE audience_id = $1", audience_id
    )
    return {r["profile_id"]: (r["member"], r["version"]) for r in found}


async def current(db: asyncpg.Pool, audience_id: int) -> set[str]:
    found = await db.fetch(
        "SELECT profile_id FROM current_memberships WHERE audience_id = $1", audience_id
    )
    return {r["profile_id"] for r in found}


async def test_counts_follow_adds_deletes_re_adds_and_stale_versions(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    applier = Applier(db, max_rows=100, delay_s=0.001)

    async def apply(*changes: tuple[str, bool, int]) -> list[bool]:
        return await asyncio.gather(
            *(applier.apply(Change(a, p, member, v)) for p, member, v in changes)
        )

    assert await apply(("p1", True, 10), ("p2", True, 11), ("p3", False, 12)) == [True] * 3
    assert await current_count(db, a) == 2
    # The same change again, a stale add over a delete, a re-add, a duplicate within a batch.
    assert await apply(("p1", True, 10), ("p2", False, 20), ("p2", True, 15)) == [
        True,
        True,
        False,
    ]
    assert await current_count(db, a) == 1
    assert await apply(("p2", True, 30), ("p3", True, 31), ("p3", True, 31)) == [True, True, False]
    assert await current_count(db, a) == 3

    pool = db
    async with pool.acquire() as conn:
        assert (
            await clear_audience(conn, a, version_of(40), delete=False, tenant=DEFAULT_TENANT) == 40
        )
    assert await current_count(db, a) == 0
    # Older than the clear: refused; newer: counts, whether the old row is swept yet or not.
    assert await apply(("p1", True, 39), ("p2", True, 41)) == [False, True]
    assert await current_count(db, a) == 1
    assert await sweep_all(db) == 2  # p1 and p3; p2 was rewritten after the clear
    assert await current_count(db, a) == 1
    assert await apply(("p3", True, 42), ("p2", False, 43)) == [True, True]
    assert await current_count(db, a) == 1
    assert await current(db, a) == {"p3"}

    async with pool.acquire() as conn:
        assert (
            await clear_audience(conn, a, version_of(50), delete=True, tenant=DEFAULT_TENANT) == 50
        )
    assert await db.fetchval("SELECT members_count FROM audiences WHERE id = $1", a) == 0
    assert await apply(("p4", True, 60)) == [False]
    assert await current_count(db, a) == 0
    await sweep_all(db)
    assert await rows(db, a) == {}
    await applier.close()


async def test_a_clear_older_than_the_last_one_changes_nothing(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           VALUES ($1, 'p1', true, 10)""",
        a,
    )
    async with db.acquire() as conn:
        assert (
            await clear_audience(conn, a, version_of(20), delete=False, tenant=DEFAULT_TENANT) == 20
        )
        await db.execute(
            """INSERT INTO memberships (audience_id, profile_id, member, version)
               VALUES ($1, 'p2', true, 30)""",
            a,
        )
        assert await current_count(db, a) == 1
        # A version below cleared_version (Redis lost its counter): the clear stays at 20.
        assert (
            await clear_audience(conn, a, version_of(15), delete=False, tenant=DEFAULT_TENANT) == 15
        )
    assert await current_count(db, a) == 1
    assert await sweep_all(db) == 1
    assert await rows(db, a) == {"p2": (True, 30)}


async def test_the_sweeper_deletes_in_batches_and_keeps_newer_rows(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    other = await new_audience(db, "other")
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           SELECT a, 'p' || lpad(n::text, 3, '0'), n % 7 <> 0, 10
           FROM unnest($1::bigint[]) AS a, generate_series(1, 250) AS n""",
        [a, other],
    )
    async with db.acquire() as conn:
        await clear_audience(conn, a, version_of(100), delete=False, tenant=DEFAULT_TENANT)
    # Re-added after the clear, between superseded rows.
    await db.execute(
        """UPDATE memberships SET version = 101 WHERE audience_id = $1
           AND profile_id IN ('p001', 'p125', 'p250')""",
        a,
    )
    assert await current_count(db, a) == 3
    batches = []
    while (swept := await sweep_once(db, batch_rows=100)) is not None:
        batches.append(swept)
    assert [(s.audience_id, s.deleted, s.done) for s in batches] == [
        (a, 99, False),
        (a, 99, False),
        (a, 49, True),
    ]
    assert await rows(db, a) == dict.fromkeys(("p001", "p125", "p250"), (True, 101))
    assert await current_count(db, a) == 3
    assert len(await rows(db, other)) == 250
    assert await current_count(db, other) == 250 - 35


async def test_a_sweep_skips_a_row_a_batch_holds_and_waits_for_none(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           VALUES ($1, 'p1', true, 10), ($1, 'p2', true, 10)""",
        a,
    )
    async with db.acquire() as conn:
        await clear_audience(conn, a, version_of(20), delete=False, tenant=DEFAULT_TENANT)
    async with db.acquire() as holder:
        held = holder.transaction()
        await held.start()
        await holder.execute(
            "SELECT 1 FROM memberships WHERE audience_id = $1 AND profile_id = 'p1' FOR UPDATE", a
        )
        swept = await sweep_once(db)
        assert swept is not None
        assert (swept.deleted, swept.done) == (1, False)
        assert await rows(db, a) == {"p1": (True, 10)}
        assert await current_count(db, a) == 0
        await held.rollback()
    # Walked again once the batch let go.
    swept = await sweep_once(db)
    assert swept is not None
    assert (swept.deleted, swept.done) == (1, True)
    assert await rows(db, a) == {}
    assert await sweep_once(db) is None


async def test_a_clear_racing_a_sweep_and_a_batch_resurrects_nobody(db: asyncpg.Pool) -> None:
    a = await new_audience(db)
    await db.execute(
        """INSERT INTO memberships (audience_id, profile_id, member, version)
           SELECT $1, 'p' || n, true, 10 FROM generate_series(1, 20) AS n""",
        a,
    )
    async with db.acquire() as conn:
        await clear_audience(conn, a, version_of(100), delete=False, tenant=DEFAULT_TENANT)
    # p5 came back after the first clear.
    await db.execute(
        "UPDATE memberships SET version = 150 WHERE audience_id = $1 AND profile_id = 'p5'", a
    )
    async with db.acquire() as sweeping, db.acquire() as clearing, db.acquire() as applying:
        # A sweeper in the middle of a batch holds its audience's sweep row...
        sweep = sweeping.transaction()
        await sweep.start()
        await sweeping.execute(
            "SELECT 1 FROM membership_sweeps WHERE audience_id = $1 FOR UPDATE", a
        )
        await sweeping.execute(
            """DELETE FROM memberships
               WHERE audience_id = $1 AND version <= 100 AND profile_id < 'p3'""",
            a,
        )
        # ...a second clear waits for it, holding the audience row, which a batch re-adding
        # p1 (newer than both clears) and p7 (older than the second) then waits for.
        clear = asyncio.create_task(
            clear_audience(clearing, a, version_of(200), delete=False, tenant=DEFAULT_TENANT)
        )
        await wait_until(lambda: blocked(db, clearing), "the clear to wait for the sweep")
        batch = asyncio.create_task(
            applying.fetch(UPSERT, [a, a], ["p1", "p7"], [True, True], [250, 190])
        )
        await wait_until(lambda: blocked(db, applying), "the batch to wait for the clear")
        await sweep.commit()
        assert await clear == 200
        assert len(await batch) == 2
    assert await current(db, a) == {"p1"}
    assert await current_count(db, a) == 1
    # The second clear's sweep starts over and takes every row it superseded.
    await sweep_all(db)
    assert await rows(db, a) == {"p1": (True, 250)}
    assert await current_count(db, a) == 1


async def blocked(db: asyncpg.Pool, conn: asyncpg.Connection) -> bool:
    event = await db.fetchval(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
    )
    return bool(event == "Lock")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_counts_stay_exact_under_concurrent_batches_clears_and_sweeps(
    db: asyncpg.Pool, seed: int
) -> None:
    """Four appliers (as four replicas) apply changes in a shuffled order with duplicates, while
    clears and deletes come and sweepers run; at the end every audience holds exactly its newest
    changes past its last clear, and its kept count says so."""
    rng = random.Random(seed)
    audiences = [await new_audience(db, f"a{i}") for i in range(4)]
    versions = itertools.count(1)
    changes = []
    for _ in range(1500):
        a = rng.choice(audiences)
        changes.append(Change(a, f"p{rng.randrange(40)}", rng.random() < 0.7, next(versions)))
    queued = changes + rng.sample(changes, 400)  # at-least-once: some run twice
    rng.shuffle(queued)
    cleared: dict[int, int] = {}
    deleted: set[int] = set()

    async def clears() -> None:
        for n in range(12):
            await asyncio.sleep(rng.uniform(0.005, 0.03))
            a = rng.choice(audiences)
            version = next(versions)
            delete = n == 8
            async with db.acquire() as conn:
                if await clear_audience(
                    conn, a, version_of(version), delete=delete, tenant=DEFAULT_TENANT
                ):
                    cleared[a] = version
                    if delete:
                        deleted.add(a)

    async def apply(applier: Applier, share: list[Change]) -> None:
        for chunk in range(0, len(share), 25):
            await asyncio.gather(*(applier.apply(c) for c in share[chunk : chunk + 25]))
            await asyncio.sleep(0)

    appliers = [Applier(db, max_rows=50, delay_s=0.002) for _ in range(4)]
    sweepers = [Sweeper(db, batch_rows=5) for _ in range(2)]
    for s in sweepers:
        s.start()
    await asyncio.gather(clears(), *(apply(ap, queued[i::4]) for i, ap in enumerate(appliers)))
    for s in sweepers:
        await s.stop()
    for ap in appliers:
        await ap.close()
    await sweep_all(db)

    newest: dict[tuple[int, str], Change] = {}
    for c in changes:
        key = (c.audience_id, c.profile_id)
        if key not in newest or c.version > newest[key].version:
            newest[key] = c
    for a in audiences:
        expected = {
            p
            for (aid, p), c in newest.items()
            if aid == a and c.member and c.version > cleared.get(a, 0) and a not in deleted
        }
        assert await current(db, a) == expected
        assert await current_count(db, a) == len(expected)
