"""What a worker process holds open while it runs: pools, rates, applier, dispatcher, sweeper."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import asyncpg
from redis.asyncio import Redis

from core.scripts import Scripts
from schemas.keys import Keys
from schemas.settings import Settings
from worker.applier import Applier
from worker.dispatcher import Dispatcher
from worker.leases import Finished
from worker.metrics import WorkerMetrics
from worker.rates import TenantRates
from worker.sweeper import Sweeper

DB_POOL_MAX_SIZE = 4
# A statement slower than this is abandoned and its jobs retried (not a hang until job_timeout).
DB_COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WorkerState:
    settings: Settings
    redis: Redis
    # The Lua scripts on ``redis``, and the deployment's keys (``scripts.keys``).
    scripts: Scripts
    db: Any  # asyncpg.Pool; asyncpg ships no type information
    rates: TenantRates
    applier: Applier
    dispatcher: Dispatcher | None
    metrics: WorkerMetrics
    # Deletes the memberships that clears and deletes superseded (None: left to other replicas).
    sweeper: Sweeper | None = None
    # Job id -> (audience, outcome) of a job that ran to its end, until the worker finishes the
    # job in Redis and counts the outcome in the same step (worker.leases).
    outcomes: dict[str, Finished] = field(default_factory=dict)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        redis: Redis,
        *,
        dispatch: bool = True,
        sweep: bool = True,
        scripts: Scripts | None = None,
    ) -> WorkerState:
        """Open the Postgres pool and start the dispatcher and the sweeper (unless
        ``dispatch=False``, ``sweep=False``); ``scripts`` are those already registered on
        ``redis``, if any."""
        scripts = scripts or Scripts(redis, Keys(settings.queue_name))
        db = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=DB_POOL_MAX_SIZE,
            command_timeout=DB_COMMAND_TIMEOUT_S,
            reset=_keep_session,
        )
        rates = TenantRates(settings, redis, scripts.keys, db)
        await rates.refresh()
        rates.start()
        applier = Applier(
            db,
            max_rows=settings.group_commit_max_rows,
            delay_s=settings.group_commit_delay_ms / 1000,
        )
        metrics = WorkerMetrics()
        dispatcher = Dispatcher(scripts, settings, rates, metrics) if dispatch else None
        if dispatcher is not None:
            dispatcher.start()
        sweeper = Sweeper(db) if sweep else None
        if sweeper is not None:
            sweeper.start()
        return cls(settings, redis, scripts, db, rates, applier, dispatcher, metrics, sweeper)

    @property
    def job_budget_s(self) -> float:
        """How long a job may take before it gives up and retries, well before arq's timeout
        (which would fail the job and delete the change)."""
        timeout_s = float(self.settings.job_timeout_s)
        return max(timeout_s * 0.8, timeout_s - 10.0)

    async def close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.rates.stop()
        await self.applier.close()
        await self.db.close()


async def _keep_session(conn: Any) -> None:
    """Connections are released as they were taken: the worker never SETs, LISTENs or takes
    advisory locks, so asyncpg's default reset query would be one wasted round trip per batch."""


class JobContext(TypedDict):
    """arq's ``ctx`` as a job sees it, with this worker's state under ``cohortsync``."""

    redis: Redis
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    cohortsync: WorkerState


STATE_KEY = "cohortsync"
