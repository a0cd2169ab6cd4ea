"""The apply_change job and the group-commit applier, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
import redis.asyncio as aioredis
from arq import Retry

from schemas.jobs import Change, DeadLetter
from schemas.settings import Settings
from tests.support.redis_keys import KEYS
from tests.support.status import wait_until
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker import memberships, new_audience
from worker.changes import apply_change
from worker.leases import Finished
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


async def test_second_run_of_a_job_finds_its_change_stored(state: WorkerState, db: Any) -> None:
    # A replica that committed a change and died before finishing the job: the re-run finds
    # exactly this version stored, so it reports applied (counted once, when the job finishes).
    a = await new_audience(db)
    assert await apply_change(job(state), Change(a, "p1", True, 100)) is True
    before = await memberships(db, a)
    assert await apply_change(job(state), Change(a, "p1", True, 100)) is True
    assert await memberships(db, a) == before == {"p1": (True, 100)}
    assert state.outcomes == {"cs:test": Finished(a, "applied")}


async def test_newer_delete_wins_over_older_add_applied_later(
    state: WorkerState, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    assert await apply_change(job(state, "cs:new"), Change(a, "p1", False, 200)) is True
    assert await apply_change(job(state, "cs:old"), Change(a, "p1", True, 100)) is False
    assert await memberships(db, a) == {"p1": (False, 200)}
    # The worker counts these when it finishes each job (tests/test_worker_leases.py).
    assert state.outcomes == {"cs:new": Finished(a, "applied"), "cs:old": Finished(a, "dropped")}


async def test_changes_before_a_clear_or_for_a_deleted_audience_are_dropped(
    state: WorkerState, db: Any
) -> None:
    cleared = await new_audience(db, "cleared")
    deleted = await new_audience(db, "deleted")
    await db.execute("UPDATE audiences SET cleared_version = 500 WHERE id = $1", cleared)
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", deleted)
    assert await apply_change(job(state), Change(cleared, "p1", True, 499)) is False
    assert await apply_change(job(state), Change(deleted, "p1", True, 501)) is False
    assert await apply_change(job(state), Change(cleared, "p2", True, 501)) is True
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
        apply_change(job(state, "cs:1:1"), Change(a, "good1", True, 1)),
        apply_change(job(state, "cs:1:2"), Change(a, "bad\x00id", True, 2)),
        apply_change(job(state, "cs:1:3"), Change(a, "good2", True, 3)),
    )
    assert list(results) == [True, False, True]
    assert set(await memberships(db, a)) == {"good1", "good2"}
    # The worker keeps the letter when it finishes the job (test_dead_letters.py runs one).
    assert [(job_id, f.outcome) for job_id, f in state.outcomes.items() if f.letter] == [
        ("cs:1:2", "dead")
    ]
    dead = [msgspec.json.decode(state.outcomes["cs:1:2"].letter, type=DeadLetter)]
    assert [(d.job_id, d.args) for d in dead] == [("cs:1:2", [a, "bad\x00id", True, 2, 1])]
    assert "CharacterNotInRepertoire" in dead[0].error or "encoding" in dead[0].error


async def test_malformed_job_arguments_go_to_dead_letters(
    state: WorkerState, redis: aioredis.Redis
) -> None:
    assert await apply_change(job(state, "cs:x"), ["7", "p", True, 1]) is False
    finished = state.outcomes["cs:x"]
    assert (finished.audience_id, finished.outcome) == (7, "dead")
    assert msgspec.json.decode(finished.letter, type=DeadLetter).args == ["7", "p", True, 1]


async def test_postgres_away_keeps_the_batch_and_commits_when_it_is_back(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    server = urlsplit(settings.database_url)
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 5432)
    await proxy.up()
    via_proxy = urlunsplit(server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}"))
    state = await WorkerState.open(
        settings.with_changes(rate_limit_per_minute=0, database_url=via_proxy),
        redis,
        dispatch=False,
    )
    try:
        await proxy.down()  # open connections reset, new ones refused
        applying = asyncio.create_task(apply_change(job(state), Change(a, "p", True, 1)))

        async def reported() -> bool:
            return state.applier.problem is not None

        await wait_until(reported, "the applier to report Postgres away")
        assert not applying.done()
        assert state.applier.problem is not None
        await proxy.up()
        assert await asyncio.wait_for(applying, timeout=30) is True
        assert state.applier.problem is None
    finally:
        await state.close()
        await proxy.down()
    assert await redis.llen(KEYS.dead_letters) == 0
    assert await memberships(db, a) == {"p": (True, 1)}
    assert state.outcomes == {"cs:test": Finished(a, "applied")}


async def test_postgres_away_past_the_job_budget_gives_the_job_back(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    # job_timeout_s 2 gives a 1.6 s budget; at the default the same happens after 240 s.
    broken = await WorkerState.open(
        settings.with_changes(rate_limit_per_minute=0, job_timeout_s=2), redis, dispatch=False
    )
    await broken.db.close()
    try:
        with pytest.raises(Retry):
            await apply_change(job(broken), Change(a, "p", True, 1))
    finally:
        await broken.close()
    assert broken.outcomes == {}
    assert await redis.llen(KEYS.dead_letters) == 0  # type: ignore[misc]
    assert await memberships(db, a) == {}
