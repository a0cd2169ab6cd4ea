"""``python -m tests.bench.noop_worker``: the baseline, a plain arq worker whose job does nothing.

It gets the knobs cohortsync's worker runs with (concurrency, poll delay, no stored results), so
the comparison measures the work per job, not arq's defaults (a poll every 0.5 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import warnings
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

from schemas.keys import APPLY_FUNCTION, Keys
from schemas.settings import Settings
from worker.app import POLL_DELAY_S, replica_name


async def noop(ctx: dict[str, Any], *args: Any) -> None:
    return None


async def serve(settings: Settings) -> None:
    keys = Keys(settings.queue_name)
    worker = Worker(
        functions=[func(noop, name=APPLY_FUNCTION)],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=keys.queue,
        max_jobs=settings.worker_max_jobs,
        keep_result=0,
        poll_delay=POLL_DELAY_S,
        handle_signals=False,
        health_check_key=keys.health_check(replica_name()),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    run = asyncio.create_task(worker.async_run())
    await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    run.cancel()
    await asyncio.wait([run])
    with warnings.catch_warnings():
        # arq 0.28 closes its pool with redis-py's deprecated close().
        warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
        await worker.close()


if __name__ == "__main__":
    asyncio.run(serve(Settings.from_env(os.environ)))
