"""The arq worker for one replica: its settings, functions and lifecycle in one factory."""

from __future__ import annotations

import os
import socket
from typing import Any, cast

from arq.connections import RedisSettings
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func

from schemas import jobs, keys
from schemas.settings import Settings
from worker.changes import apply_change
from worker.state import STATE_KEY, WorkerState

# Never give up on a change because of transient failures: apply_change turns permanent ones
# into dead letters itself, so arq's try counter only ever counts transient ones.
MAX_TRIES = 1_000_000
# arq waits this long between looks at its queue when it has room for more jobs.
POLL_DELAY_S = 0.01
# Each replica refreshes its own health key this often (the key lives one second longer).
HEALTH_CHECK_INTERVAL_S = 5


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def health_check_key(settings: Settings, replica: str) -> str:
    """Per-replica health key: ``<queue>:health-check:<host>:<pid>``, expiring when it dies."""
    return f"{settings.queue_name}{keys.ARQ_HEALTH_CHECK_SUFFIX}:{replica}"


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
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": on_startup,
        "on_shutdown": on_shutdown,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": settings.job_timeout_s,
        "max_tries": MAX_TRIES,
        "keep_result": 0,
        "job_serializer": jobs.serialize_job,
        "job_deserializer": jobs.deserialize_job,
        "poll_delay": POLL_DELAY_S,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "health_check_key": health_check_key(settings, replica_name()),
        "log_results": False,
    }
    options.update(overrides)
    return Worker(**options)
