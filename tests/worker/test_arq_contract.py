"""The arq internals worker/arq_internals.py relies on, checked against the installed arq.

Fails when an arq release moves or reshapes a private name the module uses: then adapt that
module (and only it) and widen the pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import arq.version
import pytest
import redis.asyncio as aioredis
from arq import Retry
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Worker, func

from schemas.settings import Settings
from tests.support.status import wait_until
from worker import arq_internals
from worker.arq_internals import ArqWorker

TESTED_MINOR = "0.28"
QUEUE = "arq-contract:queue"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


async def noop(ctx: dict[str, Any]) -> None:
    return None


class Recorder(ArqWorker):
    """Records what arq tells the hooks; its job functions are the test's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.polls = 0
        self.ended: dict[str, tuple[bool, int | None]] = {}
        self.unrunnable: list[str] = []
        self.forgotten = False

    async def poll(self) -> None:
        self.polls += 1

    async def job_ended(self, job_id: str, *, finished: bool, incr_score_ms: int | None) -> None:
        self.ended[job_id] = (finished, incr_score_ms)

    async def job_unrunnable(self, job_id: str) -> None:
        self.unrunnable.append(job_id)

    async def forget_health(self) -> None:
        self.forgotten = True
        await super().forget_health()


def test_the_pin_is_the_tested_minor() -> None:
    assert arq.version.VERSION.startswith(f"{TESTED_MINOR}."), arq.version.VERSION
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d for d in dependencies if re.match(r"arq\b", d)]
    assert pins == ["arq>=0.28,<0.29"]


async def test_private_attributes_exist_with_their_shapes() -> None:
    worker = Worker(functions=[func(noop, name="noop")], max_jobs=3, handle_signals=False)
    for name in arq_internals.PRIVATE_ATTRIBUTES:
        assert hasattr(worker, name), name
    assert isinstance(worker.sem, asyncio.BoundedSemaphore)
    assert worker.job_counter == 0
    assert worker.tasks == {}
    assert worker.job_tasks == {}
    assert worker.allow_pick_jobs is True
    assert worker.main_task is None
    assert worker.loop is asyncio.get_running_loop()
    assert worker._pool is None
    assert worker._handle_signals is False
    # The semaphore admits max_jobs + 1, so start_job never waits while room > 0.
    for _ in range(4):
        await asyncio.wait_for(worker.sem.acquire(), 0.1)
    assert worker.sem.locked()


# Each arq method the module overrides or calls, with the parameters it relies on.
SIGNATURES = {
    "_poll_iteration": ["self"],
    "run_job": ["self", "job_id", "score"],
    "finish_job": [
        "self",
        "job_id",
        "finish",
        "result_data",
        "result_timeout_s",
        "keep_result_forever",
        "incr_score",
        "keep_in_progress",
    ],
    "finish_failed_job": ["self", "job_id", "result_data"],
    "heart_beat": ["self"],
    "close": ["self"],
    "handle_sig": ["self", "signum"],
    "_release_sem_dec_counter_on_complete": ["self"],
}
SYNCHRONOUS = {"handle_sig", "_release_sem_dec_counter_on_complete"}


def test_every_method_the_module_relies_on_is_checked() -> None:
    relied_on = arq_internals.OVERRIDDEN_METHODS + arq_internals.CALLED_METHODS
    assert sorted(relied_on) == sorted(SIGNATURES)


@pytest.mark.parametrize(("name", "parameters"), sorted(SIGNATURES.items()))
def test_private_methods_keep_their_signatures(name: str, parameters: list[str]) -> None:
    method = getattr(Worker, name)
    assert list(inspect.signature(method).parameters) == parameters
    assert inspect.iscoroutinefunction(method) is (name not in SYNCHRONOUS)


async def slow(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(60)


async def retried(ctx: dict[str, Any]) -> None:
    raise Retry(defer=7)


@pytest.fixture
async def pool(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[ArqRedis]:
    arq_pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    yield arq_pool
    await arq_pool.aclose()


def _recorder(pool: ArqRedis, **overrides: Any) -> Recorder:
    options: dict[str, Any] = {
        "functions": [
            func(noop, name="noop"),
            func(slow, name="slow"),
            func(retried, name="retried"),
        ],
        "redis_pool": pool,
        "queue_name": QUEUE,
        "max_jobs": 2,
        "handle_signals": False,
        "keep_result": 0,
        "poll_delay": 0.01,
    }
    options.update(overrides)
    return Recorder(**options)


async def _enqueue(pool: ArqRedis, function: str, job_id: str) -> int:
    assert await pool.enqueue_job(function, _job_id=job_id, _queue_name=QUEUE) is not None
    score = await pool.zscore(QUEUE, job_id)
    assert score is not None
    return int(score)


async def test_a_started_job_runs_and_ends_through_the_hooks(pool: ArqRedis) -> None:
    worker = _recorder(pool)
    score = await _enqueue(pool, "noop", "done-1")
    assert worker.room == 2
    await worker.start_job("done-1", score)
    assert worker.room == 1
    assert list(worker.unfinished()) == ["done-1"]
    await asyncio.wait(list(worker.unfinished().values()), timeout=10)
    assert worker.ended == {"done-1": (True, None)}
    assert worker.room == 2  # arq's done-callback gave the slot back
    worker.reap_runners()
    assert worker.unfinished() == {}
    assert worker.tasks == {}


async def test_a_retry_ends_unfinished_with_arq_deferral(pool: ArqRedis) -> None:
    worker = _recorder(pool)
    score = await _enqueue(pool, "retried", "retry-1")
    await worker.start_job("retry-1", score)
    await asyncio.wait(list(worker.unfinished().values()), timeout=10)
    finished, incr_score_ms = worker.ended["retry-1"]
    assert finished is False
    assert incr_score_ms is not None
    assert incr_score_ms >= 7000  # the deferral plus the time since the job's score


async def test_cancelled_jobs_end_unfinished_and_their_runners_end(pool: ArqRedis) -> None:
    worker = _recorder(pool)
    for job_id in ("slow-1", "slow-2"):
        await worker.start_job(job_id, await _enqueue(pool, "slow", job_id))
    assert worker.room == 0

    async def both_running() -> bool:
        return worker.functions_running == 2

    await wait_until(both_running, "both job functions to run")
    worker.cancel_jobs()
    await asyncio.wait(list(worker.unfinished().values()), timeout=10)
    assert worker.ended == {"slow-1": (False, None), "slow-2": (False, None)}
    assert worker.functions_running == 0
    assert worker.room == 2


async def test_a_job_arq_cannot_run_is_unrunnable(pool: ArqRedis) -> None:
    worker = _recorder(pool)
    score = await _enqueue(pool, "not-a-function", "unknown-1")
    await worker.start_job("unknown-1", score)
    await asyncio.wait(list(worker.unfinished().values()), timeout=10)
    assert worker.unrunnable == ["unknown-1"]
    assert worker.ended == {}
    await worker.start_job("gone-1", score)  # no job key at all
    await asyncio.wait(list(worker.unfinished().values()), timeout=10)
    assert worker.unrunnable == ["unknown-1", "gone-1"]


async def test_arq_main_loop_polls_through_the_hook_and_close_undoes_it(
    settings: Settings, redis: aioredis.Redis
) -> None:
    shut_down: list[bool] = []

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        shut_down.append(True)

    arq_pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    worker = _recorder(arq_pool, on_shutdown=on_shutdown, health_check_key="arq-contract:health")
    run = asyncio.create_task(worker.async_run())

    async def polled() -> bool:
        return worker.polls >= 3

    await wait_until(polled, "arq's loop to call poll")
    assert worker.picking
    worker.stop_picking()
    assert not worker.picking
    assert worker.allow_pick_jobs is False
    assert not worker.loop_ended
    await worker.beat()
    assert await redis.exists("arq-contract:health") == 1  # arq's heartbeat wrote its key
    await worker.close()  # cancels arq's loop (handle_signals=False), as arq's own close does
    await asyncio.wait([run], timeout=10)
    assert run.cancelled()
    assert worker.loop_ended
    assert worker.forgotten
    assert await redis.exists("arq-contract:health") == 0
    assert shut_down == [True]
    assert worker._pool is None
