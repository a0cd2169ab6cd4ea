"""The apply_change job and the group-commit applier, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from arq import Retry

from schemas import keys
from schemas.jobs import Change
from schemas.settings import Settings
from tests.worker_support import memberships, new_audience, stats
from worker.changes import DeadLetter, apply_change
from worker.state import JobContext, WorkerState


@pytest.fixture
async def state(settings: Settings, db: Any, redis: aioredis.Redis) -> AsyncIterator[WorkerState]:
    opened = await WorkerState.open(
        settings.with_changes(rate_limit_per_minute=0), redis, dispatch=False
    )
    yield opened
    await opened.close()


def job(state: WorkerState, job_id: str = "cs:test", job_try: int = 1) -> JobContext:
    return {
        "redis": state.redis,
        "job_id": job_id,
        "job_try": job_try,
        "enqueue_time": datetime.now(UTC),
        "score": 0,
        "cohortsync": state,
    }


async def test_second_run_of_a_job_is_a_no_op(state: WorkerState, db: Any) -> None:
    a = await new_audience(db)
    assert await apply_change(job(state), a, "p1", True, 100) is True
    before = await memberships(db, a)
    assert await apply_change(job(state), a, "p1", True, 100) is False
    assert await memberships(db, a) == before == {"p1": (True, 100)}


async def test_newer_delete_wins_over_older_add_applied_later(
    state: WorkerState, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    assert await apply_change(job(state), a, "p1", False, 200) is True
    assert await apply_change(job(state), a, "p1", True, 100) is False
    assert await memberships(db, a) == {"p1": (False, 200)}
    await state.applier.close()  # counters are written in the background
    assert await stats(redis, a) == {"applied": 1, "dropped": 1}


async def test_changes_before_a_clear_or_for_a_deleted_audience_are_dropped(
    state: WorkerState, db: Any
) -> None:
    cleared = await new_audience(db, "cleared")
    deleted = await new_audience(db, "deleted")
    await db.execute("UPDATE audiences SET cleared_version = 500 WHERE id = $1", cleared)
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", deleted)
    assert await apply_change(job(state), cleared, "p1", True, 499) is False
    assert await apply_change(job(state), deleted, "p1", True, 501) is False
    assert await apply_change(job(state), cleared, "p2", True, 501) is True
    assert await memberships(db, cleared) == {"p2": (True, 501)}
    assert await memberships(db, deleted) == {}


async def test_concurrent_applies_share_statements(state: WorkerState, db: Any) -> None:
    a = await new_audience(db)
    n = 100
    results = await asyncio.gather(
        *(state.applier.apply(Change(a, f"p{i}", True, 10 + i)) for i in range(n))
    )
    assert results == [True] * n
    assert state.applier.statements < n
    assert len(await memberships(db, a)) == n


async def test_batch_keeps_newest_change_per_profile(state: WorkerState, db: Any) -> None:
    a = await new_audience(db)
    changes = [Change(a, "p", True, 5), Change(a, "p", False, 7), Change(a, "p", True, 6)]
    results = await asyncio.gather(*(state.applier.apply(c) for c in changes))
    assert list(results) == [False, True, False]
    assert state.applier.statements == 1
    assert await memberships(db, a) == {"p": (False, 7)}


async def test_a_bad_row_goes_to_dead_letters_alone(
    state: WorkerState, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    # Postgres text cannot hold NUL: this change fails the same way on every try.
    results = await asyncio.gather(
        apply_change(job(state, "cs:1:1"), a, "good1", True, 1),
        apply_change(job(state, "cs:1:2"), a, "bad\x00id", True, 2),
        apply_change(job(state, "cs:1:3"), a, "good2", True, 3),
    )
    assert list(results) == [True, False, True]
    assert set(await memberships(db, a)) == {"good1", "good2"}
    dead = [
        msgspec.json.decode(raw, type=DeadLetter)
        for raw in await redis.lrange(keys.DEAD_LETTERS, 0, -1)  # type: ignore[misc]
    ]
    assert [(d.job_id, d.args) for d in dead] == [("cs:1:2", [a, "bad\x00id", True, 2])]
    assert "CharacterNotInRepertoire" in dead[0].error or "encoding" in dead[0].error


async def test_malformed_job_arguments_go_to_dead_letters(
    state: WorkerState, redis: aioredis.Redis
) -> None:
    assert await apply_change(job(state, "cs:x"), "7", "p", True, 1) is False  # type: ignore[arg-type]
    assert await redis.llen(keys.DEAD_LETTERS) == 1  # type: ignore[misc]


async def test_unreachable_postgres_retries_with_growing_back_off(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    broken = await WorkerState.open(
        settings.with_changes(rate_limit_per_minute=0), redis, dispatch=False
    )
    await broken.db.close()
    try:
        with pytest.raises(Retry) as first:
            await apply_change(job(broken, job_try=1), a, "p", True, 1)
        with pytest.raises(Retry) as later:
            await apply_change(job(broken, job_try=12), a, "p", True, 1)
    finally:
        await broken.close()
    assert first.value.defer_score is not None
    assert later.value.defer_score is not None
    assert 0 < first.value.defer_score <= 500 < later.value.defer_score <= 60_000
    assert await redis.llen(keys.DEAD_LETTERS) == 0  # type: ignore[misc]
    assert await memberships(db, a) == {}
