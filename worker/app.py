"""The arq worker for one replica: its settings, functions and lifecycle in one factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable
from typing import Any, cast

import msgspec
import redis.exceptions
from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from arq.worker import func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from core import redisconn
from core.scripts import Scripts
from core.scripts.upgrade import warn_if_pending
from schemas import jobs
from schemas.jobs import DeadLetter
from schemas.keys import (
    APPLY_FUNCTION,
    DEFAULT_TENANT,
    IDLE_RECLAIM_S,
    STATS_TENANT,
    Keys,
    parse_job_id,
)
from schemas.settings import Settings
from worker.arq_internals import ArqWorker
from worker.changes import apply_change
from worker.errors import describe, raise_if_cancelled
from worker.leases import RENEW_EVERY_S, Finished
from worker.state import STATE_KEY, WorkerState

logger = logging.getLogger(__name__)
_encode_letter = msgspec.json.Encoder().encode

# Never give up on a change because of transient failures: apply_change turns permanent ones
# into dead letters itself, so arq's try counter only ever counts transient ones.
MAX_TRIES = 1_000_000
# arq waits this long between looks at its queue when it has room for more jobs, and this
# long when its last look found only jobs already running.
POLL_DELAY_S = 0.01
IDLE_POLL_DELAY_S = 0.05
# Each replica refreshes its own health key this often (the key lives one second longer).
HEALTH_CHECK_INTERVAL_S = 5
# Idle audiences one replica forgets per registry refresh (reclaim.lua, a few ms of Redis).
RECLAIM_BATCH = 200
# Redis calls that failed: Redis away (restart, failover), or refusing writes (out of memory,
# MISCONF when it cannot persist). Waited out and reported by /healthz, never fatal.
REDIS_UNREACHABLE = (redis.exceptions.RedisError, OSError)
# Commands that get no answer this long count as failed (a partition that resets nothing).
REDIS_SOCKET_TIMEOUT_S = 10.0
REDIS_CONNECT_TIMEOUT_S = 1.0
# A replica whose poll loop has not reached Redis for this long reports it. Polls stop while
# every job slot is taken (arq's loop waits for one), which happened during a Redis outage with
# rate-gated dispatch: /healthz then said 200 for the whole 10 s outage in 2 of 5 fault-suite
# runs at 30 s here; at 5 s, 0 of 5.
REDIS_SILENT_S = 5.0
# After a failed Redis call a replica reports unhealthy this long, so a Redis that fails only
# some calls (out of memory refuses writes, not reads) does not look healthy between them.
REDIS_PROBLEM_HOLD_S = 10.0
MAX_REDIS_BACKOFF_S = 2.0
# How long a stop waits for arq's loop to end once its jobs are handed back.
STOP_TIMEOUT_S = 15.0
# A job that ended without an outcome (arq's own timeout) runs again this much later.
UNFINISHED_DEFER_MS = 5000


def redis_pool(settings: Settings) -> ArqRedis:
    """arq's pool on the primary ``COHORTSYNC_REDIS_URL`` names (one server, or a Sentinel group
    followed through failovers); commands ride out a Redis restart or failover of a few seconds
    rather than stopping the worker. Repeating a command whose reply was lost at worst wastes a
    rate-limit slot or counts a change twice in the counters; arq's WATCHed start fails safe."""
    pool = redisconn.connect(
        settings.redis_url,
        redis_class=ArqRedis,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        # arq sets none: a partition that resets nothing would hang a call for minutes.
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=8),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )
    # What arq's create_pool would set on a pool it made itself.
    pool.job_serializer = jobs.serialize_job
    pool.job_deserializer = jobs.deserialize_job
    pool.default_queue_name = Keys(settings.queue_name).queue
    return pool


# Drawn once per process: containers on the host network share a hostname and can share a
# pid (each its own pid 1), and two replicas must never share a health key.
_REPLICA_TOKEN = secrets.token_hex(3)


def replica_name() -> str:
    """``<host>:<pid>:<token>``, unique per process even where host and pid repeat."""
    return f"{socket.gethostname()}:{os.getpid()}:{_REPLICA_TOKEN}"


class ChangeWorker(ArqWorker):
    """arq's worker for the deployment ``keys``, holding the jobs it runs by leases
    (``core/scripts/leases.py``) and riding out Redis outages.

    arq marks a running job with an in-progress key that lives for the job timeout plus 10 s,
    so a replica that dies holds its jobs for minutes; here a job is held by a lease its replica
    renews, claimed with ``claim.lua`` for many ids in one round trip (arq spends four per id),
    reading past every held id until the replica has as many as it has room for. arq stops when
    a Redis call fails in its poll loop; here the loop backs off and goes on, and ``/healthz``
    reports the outage until Redis answers again.
    """

    _scripts: Scripts | None = None
    _renewing: asyncio.Task[None] | None = None
    _registered_at_s = 0.0
    # Monotonic time of the last poll that reached Redis, and why the last one did not.
    _redis_ok_at = 0.0
    _redis_failed_at = 0.0
    _redis_problem: str | None = None
    _redis_failures = 0

    def __init__(self, *args: Any, keys: Keys, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = keys
        # Job id -> the score it was claimed with, while it runs: arq's deferral is relative
        # to it (``job_ended``).
        self._scores: dict[str, int] = {}
        # Set by stop_worker: the loops end at their next turn even if a cancellation got lost.
        self.stopping = False

    @property
    def scripts(self) -> Scripts:
        """The Lua scripts on arq's pool (the jobs' ``ctx["redis"]``), registered once."""
        if self._scripts is None:
            self._scripts = Scripts(self.pool, self.keys)
        return self._scripts

    @property
    def started(self) -> bool:
        """True once a poll reached Redis (the worker got past its start-up)."""
        return self._redis_ok_at > 0

    def health_problem(self) -> str | None:
        """Why this replica cannot make progress now, or None while it can."""
        now = time.monotonic()
        if self._redis_problem is not None and now - self._redis_failed_at < REDIS_PROBLEM_HOLD_S:
            return f"Redis failing: {self._redis_problem}"
        if self._redis_ok_at and now - self._redis_ok_at > REDIS_SILENT_S:
            return f"Redis unreachable: no answer for {REDIS_SILENT_S:g} s"
        state = self.ctx.get(STATE_KEY)
        if not isinstance(state, WorkerState):
            return "starting"
        if state.applier.problem is not None:
            return f"Postgres unreachable: {state.applier.problem}"
        return None

    async def poll(self) -> None:
        if self.stopping:
            raise asyncio.CancelledError
        try:
            if self.picking and self.room > 0:
                await self._claim_and_start()
            self.reap_runners()
            await self.beat()
            await self._register()
        except REDIS_UNREACHABLE as e:
            raise_if_cancelled(e)
            self._redis_failed(e)
            await asyncio.sleep(min(MAX_REDIS_BACKOFF_S, 0.1 * 2 ** min(self._redis_failures, 6)))
            return
        if self._redis_failures:
            logger.info("Redis answers again after %d failed polls", self._redis_failures)
            self._redis_failures = 0
        self._redis_ok_at = time.monotonic()
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.create_task(self._renew_leases(), name="cohortsync-leases")

    async def _claim_and_start(self) -> None:
        claimed = await self.scripts.leases.claim(self.room)
        for job in claimed:
            await self.start_job(job.job_id, job.score)  # never waits: at most room were claimed
        if not claimed:
            await asyncio.sleep(IDLE_POLL_DELAY_S - POLL_DELAY_S)

    async def _renew_leases(self) -> None:
        while not self.stopping:
            await asyncio.sleep(RENEW_EVERY_S)
            running = list(self.unfinished())
            try:
                await self.scripts.leases.renew(running)
            except REDIS_UNREACHABLE as e:
                raise_if_cancelled(e)
                # Renewed at the next turn; a lease that lapses meanwhile only means that
                # another replica may run the job too, which versions make harmless.
                self._redis_failed(e)

    async def run_claimed(self, job_id: str, score: int) -> None:
        self._scores[job_id] = score
        try:
            await super().run_claimed(job_id, score)
        except REDIS_UNREACHABLE as e:
            raise_if_cancelled(e)
            # The job stays queued; its lease lapses and any replica runs it again.
            self._redis_failed(e)
        finally:
            self._outcomes().pop(job_id, None)
            self._scores.pop(job_id, None)

    async def job_ended(self, job_id: str, *, finished: bool, incr_score_ms: int | None) -> None:
        outcome = self._outcomes().pop(job_id, None)
        if finished and outcome is not None:
            await self.scripts.leases.finish(job_id, *outcome)
        else:
            # Retried, cancelled, or (arq's own job timeout) failed without an outcome: the
            # change goes back to the queue, never lost.
            await self.scripts.leases.retry(job_id, self._due_ms(job_id, finished, incr_score_ms))

    def _due_ms(self, job_id: str, finished: bool, incr_score_ms: int | None) -> int:
        """When a job that ended without an outcome is due again (Unix ms).

        arq's ``Retry(defer=d)`` comes as what arq would add to the score the job was claimed
        with: ``d`` plus the time since that score, so their sum is now + ``d`` however long the
        job waited. A job that ended unfinished waits ``UNFINISHED_DEFER_MS`` from now; one
        retried without a deferral or cancelled is due at once, ahead of what queued since.
        """
        if incr_score_ms:
            return self._scores[job_id] + incr_score_ms
        return int(time.time() * 1000) + UNFINISHED_DEFER_MS if finished else 0

    async def job_unrunnable(self, job_id: str) -> None:
        """arq gives up on a job it cannot run (its payload unreadable, its function unknown to
        this version, or its key gone because another run finished it): kept as a dead letter
        and counted, unless another run had finished it."""
        audience_id, _ = parse_job_id(job_id)
        letter = DeadLetter(job_id, [], "arq could not run the job", int(time.time() * 1000))
        # Its payload is what could not be read: the audience's counters say whose it is.
        tenant = await cast(
            Awaitable[bytes | None], self.pool.hget(self.keys.stats(audience_id), STATS_TENANT)
        )
        await self.scripts.leases.finish(
            job_id,
            audience_id,
            "dead",
            _encode_letter(letter),
            int(tenant) if tenant else DEFAULT_TENANT,
        )

    async def _register(self) -> None:
        """This replica's entry in the registry that readers count live replicas from
        (``Keys.workers``), kept until two refreshes were missed, and the rate it enforces by
        default, which status reports when no override is set."""
        now_s = time.time()
        if now_s - self._registered_at_s >= HEALTH_CHECK_INTERVAL_S:
            self._registered_at_s = now_s
            forget_at_ms = int((now_s + 2 * HEALTH_CHECK_INTERVAL_S + 1) * 1000)
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.zadd(self.keys.workers, {self.health_check_key: forget_at_ms})
                await pipe.execute()
            # Idle audiences' keys go here, at the pace of the registry: a batch per replica
            # every few seconds is far ahead of how fast audiences go idle.
            await self.scripts.reclaim(IDLE_RECLAIM_S, RECLAIM_BATCH)

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        await super().close()

    async def forget_health(self) -> None:
        try:
            await super().forget_health()
        except REDIS_UNREACHABLE as e:
            logger.warning("could not remove this replica's health key: %s", describe(e))

    def _outcomes(self) -> dict[str, Finished]:
        state = self.ctx.get(STATE_KEY)
        return state.outcomes if isinstance(state, WorkerState) else {}

    def _redis_failed(self, error: BaseException) -> None:
        now = time.monotonic()
        if now - self._redis_failed_at >= REDIS_PROBLEM_HOLD_S:
            logger.warning("Redis failing, retrying with back-off: %s", describe(error))
        self._redis_failures += 1
        self._redis_failed_at = now
        self._redis_problem = describe(error)


def create_worker(settings: Settings, **overrides: Any) -> ChangeWorker:
    """An arq ``Worker`` that dispatches backlogs and applies changes; ``overrides`` go to arq."""
    keys = Keys(settings.queue_name)

    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[STATE_KEY] = await WorkerState.open(settings, ctx["redis"], scripts=worker.scripts)
        await warn_if_pending(worker.scripts.upgrade, logger)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        state = ctx.pop(STATE_KEY, None)
        if isinstance(state, WorkerState):
            await state.close()

    options: dict[str, Any] = {
        "functions": [
            func(
                cast(WorkerCoroutine, apply_change),
                name=APPLY_FUNCTION,
                timeout=settings.job_timeout_s,
                max_tries=MAX_TRIES,
            )
        ],
        "keys": keys,
        "queue_name": keys.queue,
        "redis_pool": redis_pool(settings),
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
        "health_check_key": keys.health_check(replica_name()),
        "log_results": False,
    }
    options.update(overrides)
    worker = ChangeWorker(**options)
    return worker


async def stop_worker(
    worker: ChangeWorker, run: asyncio.Task[None], *, grace_s: float = 0.0
) -> None:
    """Stop a worker started as the task ``run``: take no new jobs, give the running ones up to
    ``grace_s`` to finish, cancel the rest (they stay on the queue and any replica re-runs them),
    then close its connections (the applier commits what it holds first).

    arq's own signal handler cancels whole job runners instead, and a runner cancelled before
    its job started escapes arq's ``close()`` and leaves the rest of the shutdown undone.
    """
    worker.stop_picking()
    running = list(worker.unfinished().values())
    if running and grace_s > 0:
        await asyncio.wait(running, timeout=grace_s)
    while running := list(worker.unfinished().values()):
        worker.cancel_jobs()
        await asyncio.wait(running, timeout=0.05)
    worker.stopping = True  # only now: leases were renewed while the jobs had their grace
    run.cancel()
    _, still_running = await asyncio.wait([run], timeout=STOP_TIMEOUT_S)
    if still_running:
        logger.error("the worker's loop did not stop within %g s; closing anyway", STOP_TIMEOUT_S)
    await worker.close()
