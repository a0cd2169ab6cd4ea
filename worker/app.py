"""The arq worker for one replica: its settings, functions and lifecycle in one factory."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import warnings
from typing import Any, cast

import redis.exceptions
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript

from schemas import jobs, keys
from schemas.lua import source
from schemas.settings import Settings
from worker.changes import apply_change
from worker.state import STATE_KEY, WorkerState

# Never give up on a change because of transient failures: apply_change turns permanent ones
# into dead letters itself, so arq's try counter only ever counts transient ones.
MAX_TRIES = 1_000_000
# arq waits this long between looks at its queue when it has room for more jobs, and this
# long when its last look found only jobs already running.
POLL_DELAY_S = 0.01
IDLE_POLL_DELAY_S = 0.05
# Each replica refreshes its own health key this often (the key lives one second longer).
HEALTH_CHECK_INTERVAL_S = 5


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings; commands ride out a Redis restart of a few seconds rather
    than stopping the worker. Repeating a command whose reply was lost at worst wastes a
    rate-limit slot or counts a change twice in the counters; arq's WATCHed start fails safe."""
    connection = RedisSettings.from_dsn(settings.redis_url)
    connection.retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8)
    connection.retry_on_error = [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    return connection


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ChangeWorker(Worker):
    """arq's worker, claiming the jobs it starts in one round trip per poll.

    arq spends four round trips on each id it reads (WATCH, EXISTS, ZSCORE, MULTI/EXEC) before
    starting or skipping it; ``claim.lua`` applies the same rule to every id at once. The
    dispatcher keeps arq's queue shallow, so most ids a poll reads belong to jobs already
    running (waiting for their rate-limit slot, here or on another replica).
    """

    _claim: AsyncScript | None = None
    _registered_at_s = 0.0

    async def record_health(self) -> None:
        """arq's health key, and this replica's entry in the registry that readers count live
        replicas from (``keys.WORKERS``), kept until two refreshes were missed."""
        await super().record_health()
        now_s = time.time()
        if now_s - self._registered_at_s >= HEALTH_CHECK_INTERVAL_S:
            self._registered_at_s = now_s
            forget_at_ms = int((now_s + 2 * HEALTH_CHECK_INTERVAL_S + 1) * 1000)
            await self.pool.zadd(keys.WORKERS, {self.health_check_key: forget_at_ms})

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        room = self.max_jobs - self.job_counter
        ids = [j.decode() for j in job_ids]
        ids = [j for j in ids if j not in self.tasks][:room]
        claimed: list[bytes] = []
        if ids:
            if self._claim is None:
                self._claim = self.pool.register_script(source("claim"))
            ttl_ms = int(self.in_progress_timeout_s * 1000)
            claimed = await self._claim(
                keys=[self.queue_name], args=[in_progress_key_prefix, ttl_ms, *ids]
            )
        if not claimed:
            await asyncio.sleep(IDLE_POLL_DELAY_S - POLL_DELAY_S)
            return
        for raw_id, score in zip(claimed[::2], claimed[1::2], strict=True):
            job_id = raw_id.decode()
            await self.sem.acquire()  # never waits: at most ``room`` ids were claimed
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """An arq ``Worker`` that dispatches backlogs and applies changes; ``overrides`` go to arq."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[STATE_KEY] = await WorkerState.open(settings, ctx["redis"])

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        state = ctx.pop(STATE_KEY, None)
        if isinstance(state, WorkerState):
            await state.close()

    options: dict[str, Any] = {
        "functions": [
            func(
                cast(WorkerCoroutine, apply_change),
                name=keys.APPLY_FUNCTION,
                timeout=settings.job_timeout_s,
                max_tries=MAX_TRIES,
            )
        ],
        "queue_name": settings.queue_name,
        "redis_settings": redis_settings(settings),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.job_timeout_s,
        "max_tries": MAX_TRIES,
        "keep_result": 0,
        "job_serializer": jobs.serialize_job,
        "job_deserializer": jobs.deserialize_job,
        "poll_delay": POLL_DELAY_S,
        # Each look reads past every job already running to the ones waiting to start.
        "queue_read_limit": max(settings.worker_max_jobs * 5, settings.dispatch_watermark * 2),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "health_check_key": keys.worker_health_key(settings.queue_name, replica_name()),
        "log_results": False,
    }
    options.update(overrides)
    return ChangeWorker(**options)


async def stop_worker(worker: Worker, run: asyncio.Task[None], *, grace_s: float = 0.0) -> None:
    """Stop a worker started as the task ``run``: take no new jobs, give the running ones up to
    ``grace_s`` to finish, cancel the rest (they stay on the queue and any replica re-runs them),
    then close its connections (the applier commits what it holds first).

    arq's own signal handler cancels whole job runners instead, and a runner cancelled before
    its job started escapes arq's ``close()`` and leaves the rest of the shutdown undone.
    """
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running and grace_s > 0:
        await asyncio.wait(running, timeout=grace_s)
    while running := [t for t in worker.tasks.values() if not t.done()]:
        for job in list(worker.job_tasks.values()):
            job.cancel()
        await asyncio.wait(running, timeout=0.05)
    run.cancel()
    await asyncio.wait([run])
    with warnings.catch_warnings():
        # arq 0.28 closes its pool with redis-py's deprecated close().
        warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
        await worker.close()
