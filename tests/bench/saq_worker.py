"""``python -m tests.bench.saq_worker``: saq's worker running a job that does nothing, the
baseline a user would pick instead of arq's (``tests.bench.noop_worker``).

It runs with the concurrency cohortsync's worker has and saq's defaults otherwise (saq blocks on
BLMOVE: there is no poll delay to tune). ``saq_noop_rate`` enqueues its jobs with ``ttl=-1``, so a
finished job's record is deleted, as arq's ``keep_result=0`` does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from saq import Queue, Worker

from schemas.settings import Settings
from tests.bench.capacity import drain_rate
from tests.bench.processes import READY_TIMEOUT_S, Children, environment
from tests.bench.services import Services
from tests.bench.sizes import Sizes

QUEUE = "cohortsync-bench"
NOOP = "noop"
# Concurrent enqueue calls filling saq's queue.
ENQUEUERS = 16
# Generous guess of saq's rate in one process, to queue enough work for the window.
GUESS_PER_S = 4000


async def noop(ctx: Any) -> None:
    return None


def worker_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def info_key(pid: int) -> str:
    """The key saq's worker writes its stats to as soon as it runs (``write_worker_info``)."""
    return f"saq:{QUEUE}:worker_info:{worker_id(pid)}"


async def serve(settings: Settings) -> None:
    queue = Queue.from_url(settings.redis_url, name=QUEUE)
    worker = Worker(
        queue,
        functions=[(NOOP, noop)],
        id=worker_id(os.getpid()),
        concurrency=settings.worker_max_jobs,
    )
    try:
        # Until SIGTERM (saq sets its own handlers).
        await worker.start()
    finally:
        await queue.disconnect()


async def saq_noop_rate(svc: Services, children: Children, sizes: Sizes) -> float:
    """No-op jobs one saq worker process finishes per second, as ``drain_rate`` counts them."""
    await svc.reset()
    queue = Queue.from_url(svc.redis_url, name=QUEUE)
    try:
        jobs = int(GUESS_PER_S * (sizes.capacity_warmup_s + sizes.capacity_s + 2))
        next_job = iter(range(jobs))

        async def enqueue() -> None:
            for _ in next_job:
                await queue.enqueue(NOOP, ttl=-1)

        await asyncio.gather(*(enqueue() for _ in range(ENQUEUERS)))
        env = environment(svc.database_url, svc.redis_url)
        worker = await children.start("saq-worker", env, "-m", "tests.bench.saq_worker")

        async def ready() -> None:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not await svc.redis.exists(info_key(worker.pid)):
                if not worker.running:
                    raise RuntimeError(f"saq worker exited at start-up:\n{worker.log()}")
                if time.monotonic() > deadline:
                    raise TimeoutError("the saq worker did not start")
                await asyncio.sleep(0.05)

        async def remaining() -> int:
            # Queued, running and scheduled: a job leaves this set when it finished.
            return await queue.count("incomplete")

        per_s, _ = await drain_rate(svc, [worker], sizes, remaining=remaining, ready=ready)
        await worker.stop()
    finally:
        await queue.disconnect()
    return per_s


if __name__ == "__main__":
    asyncio.run(serve(Settings.from_env(os.environ)))
