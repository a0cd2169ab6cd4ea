"""A job that ends without an outcome goes back to the queue due after its delay, counted from
when it ended, not from when it was first queued."""

from __future__ import annotations

import time
from typing import Any, Literal

import pytest
import redis.asyncio as aioredis
from arq import Retry
from arq.worker import func

from schemas.keys import APPLY_FUNCTION
from schemas.settings import Settings
from tests.support.redis_keys import KEYS, scripts
from tests.support.status import running_worker, wait_until
from tests.support.worker import accept, memberships, new_audience, stats
from worker import app
from worker.changes import apply_change
from worker.drain import is_drained
from worker.state import JobContext

DELAY_MS = 2000
# The queued job's score was this long ago: a delay counted from it would be over at once.
WAITED_MS = 60_000
# Redis's clock (claims) and this process's (arq's deferral) are one machine's; allow for the
# time between reading the clock and the job ending, and a poll of the worker.
SLACK_MS = 150

Ending = Literal["retry", "unfinished"]


@pytest.mark.parametrize("ending", ["retry", "unfinished"])
async def test_a_job_ended_without_an_outcome_is_due_after_its_delay(
    ending: Ending,
    settings: Settings,
    db: Any,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A job ended without an outcome (arq's own job timeout) waits UNFINISHED_DEFER_MS; the
    # test's is as short as Retry's, the logic the same.
    monkeypatch.setattr(app, "UNFINISHED_DEFER_MS", DELAY_MS)
    tries_ms: list[int] = []

    async def first_try_fails(ctx: JobContext, change: Any) -> bool:
        tries_ms.append(int(time.time() * 1000))
        if len(tries_ms) > 1:
            return await apply_change(ctx, change)
        if ending == "retry":
            raise Retry(defer=DELAY_MS / 1000)
        return False  # no outcome recorded, as when arq's timeout ends a job

    audience = await new_audience(db)
    [version] = await accept(redis, audience, [("add", "p1")])
    assert (await scripts(redis).dispatch(watermark=10, batch=10, quantum=10)).created == 1
    job_id = KEYS.job_id(audience, version)
    await redis.zadd(KEYS.queue, {job_id: int(time.time() * 1000) - WAITED_MS})

    function = func(first_try_fails, name=APPLY_FUNCTION, max_tries=app.MAX_TRIES)  # type: ignore[arg-type]
    unlimited = settings.with_changes(rate_limit_per_minute=0)
    async with running_worker(unlimited, redis, functions=[function]):

        async def requeued() -> bool:
            return len(tries_ms) > 1 or await redis.zscore(KEYS.queue, job_id) is not None

        await wait_until(requeued, "the job back on the queue after its first try")
        due_ms = await redis.zscore(KEYS.queue, job_id)
        assert len(tries_ms) == 1, "tried again at once"
        assert due_ms is not None
        assert tries_ms[0] + DELAY_MS <= due_ms <= tries_ms[0] + DELAY_MS + SLACK_MS

        async def drained() -> bool:
            return await is_drained(redis, KEYS)

        await wait_until(drained, "the second try to apply the change")
    assert len(tries_ms) == 2
    # Not claimed before it was due, and claimed soon after.
    assert due_ms - SLACK_MS <= tries_ms[1] <= due_ms + 1000
    assert await memberships(db, audience) == {"p1": (True, version)}
    assert (await stats(redis, audience))["applied"] == 1
