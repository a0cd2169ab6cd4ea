"""Worker capacity with the limit lifted, beside a plain arq worker running no-op jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from arq.connections import RedisSettings, create_pool

from schemas import keys
from tests.bench.backlog import adds, fill, outstanding, profile_id
from tests.bench.processes import Child, Children, environment, wait_for_workers
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, rate, times
from tests.support.redis_keys import KEYS

TARGET_RATIO = 0.9
# Concurrent enqueue_job calls filling arq's queue for the baseline.
ENQUEUERS = 16
SAMPLE_S = 0.1
# Generous guesses of each worker's rate per process, to queue enough work for the window.
OURS_GUESS_PER_S = 8000
ARQ_GUESS_PER_S = 4000


async def drain_rate(
    svc: Services,
    workers: list[Child],
    sizes: Sizes,
    *,
    remaining: Callable[[], Awaitable[int]] | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> tuple[float, int]:
    """Changes done per second over the window after the warm-up, counted while work remained;
    also how many were done in that window. Work left is ``outstanding`` and the workers are
    ready when their health keys are there, unless ``remaining`` and ``ready`` say otherwise
    (another queue's workers)."""
    if ready is None:
        await wait_for_workers(svc.redis, KEYS, workers)
    else:
        await ready()

    async def left_now() -> int:
        return await (remaining() if remaining else outstanding(svc.redis, KEYS))

    await asyncio.sleep(sizes.capacity_warmup_s)
    first_t, first = time.monotonic(), await left_now()
    last_t, last = first_t, first
    end = first_t + sizes.capacity_s
    while time.monotonic() < end:
        await asyncio.sleep(SAMPLE_S)
        left = await left_now()
        if left == 0:
            break
        last_t, last = time.monotonic(), left
    for w in workers:
        if not w.running:
            raise RuntimeError(f"{w.name} {w.pid} exited:\n{w.log()}")
    if last == first:
        raise RuntimeError("nothing was done in the window (the backlog was too small?)")
    return (first - last) / (last_t - first_t), first - last


async def _ours(svc: Services, children: Children, processes: int, sizes: Sizes) -> float:
    await svc.reset()
    audience = await svc.new_audience("capacity")
    await fill(svc.redis_url, audience, adds(_backlog(sizes, processes, OURS_GUESS_PER_S)))
    env = environment(svc.database_url, svc.redis_url, rate_limit_per_minute=0)
    workers = [await children.worker(env) for _ in range(processes)]
    per_s, done = await drain_rate(svc, workers, sizes)
    await asyncio.gather(*(w.stop() for w in workers))
    # What the counts said was done is in Postgres.
    stored = await svc.db.fetchval("SELECT count(*) FROM memberships")
    if stored < done:
        raise RuntimeError(f"{done} changes counted as done but only {stored} rows stored")
    return per_s


async def arq_noop_rate(svc: Services, children: Children, processes: int, sizes: Sizes) -> float:
    await svc.reset()
    jobs = _backlog(sizes, processes, ARQ_GUESS_PER_S)
    pool = await create_pool(RedisSettings.from_dsn(svc.redis_url), default_queue_name=KEYS.queue)
    try:
        next_job = iter(range(jobs))

        async def enqueue() -> None:
            for n in next_job:
                await pool.enqueue_job(keys.APPLY_FUNCTION, 1, profile_id(n), True, n + 1)

        await asyncio.gather(*(enqueue() for _ in range(ENQUEUERS)))
    finally:
        await pool.aclose()
    env = environment(svc.database_url, svc.redis_url)
    workers = [
        await children.start("noop-worker", env, "-m", "tests.bench.noop_worker")
        for _ in range(processes)
    ]
    per_s, _ = await drain_rate(svc, workers, sizes)
    await asyncio.gather(*(w.stop() for w in workers))
    return per_s


def _backlog(sizes: Sizes, processes: int, guess_per_s: int) -> int:
    # Enough for the warm-up and the window at a generous guess of the rate; a backlog that runs
    # dry early only shortens the window.
    return int(guess_per_s * processes * (sizes.capacity_warmup_s + sizes.capacity_s + 2))


async def capacity_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    rows = []
    for processes in (1, 2):
        ours = await _ours(svc, children, processes, sizes)
        arq = await arq_noop_rate(svc, children, processes, sizes)
        ratio = ours / arq
        rows.append(
            Row(
                f"worker capacity, rate limit lifted, {processes} process"
                + ("es" if processes > 1 else ""),
                rate(ours, "changes"),
                f"arq no-op jobs: {rate(arq, 'jobs')}",
                times(ratio),
                f"≥ {TARGET_RATIO}x per process",
                ratio >= TARGET_RATIO,
            )
        )
    await svc.reset()
    return rows
