"""Redis time of a status call and of a /metrics scrape at 1k, 10k and 100k audiences with work,
beside the snapshot before the aggregates (``queue_state_before.lua``, every audience read on
every call) in the same run. Redis's own measure: INFO commandstats' microseconds, on the
bench's own server."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from core.scripts import Scripts
from core.scripts.queue_state import MEASURE_WINDOW_S
from core.snapshot import read_snapshot
from schemas.keys import Keys
from schemas.settings import Settings
from schemas.status import DEFAULT_STATUS_PAGE_SIZE, ETA_EXACT_RANKS
from tests.bench.processes import Children
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row

KEYS = Keys("bench-status")
TARGET_MS = 1.0
TRIES = 20
BASELINE_TRIES = 2
# Audiences per accept.lua call while filling.
FILL_BATCH = 1000
# What a status call or a scrape sends (no script runs these): the scripts, the registry read.
SENT = ("evalsha", "zrangebyscore")
BEFORE = Path(__file__).with_name("queue_state_before.lua").read_text()


async def _fill(scripts: Scripts, audiences: int) -> None:
    """Every audience with 1 to 5 changes pending, accepted as the edge does (so the aggregates
    are what the scripts keep), and a counters hash."""
    for first in range(1, audiences + 1, FILL_BATCH):
        groups = {
            a: [f"ap{j}" for j in range(a % 5 + 1)]
            for a in range(first, min(audiences, first + FILL_BATCH - 1) + 1)
        }
        await scripts.backlogs.accept(groups, max_backlog=10**12)


async def _redis_ms(
    redis: aioredis.Redis, call: Callable[[], Awaitable[object]], tries: int
) -> float:
    """Mean Redis time (ms) of one call over ``tries``: the microseconds INFO commandstats
    counts for the commands the call sends (a script's EVALSHA holds the commands it runs;
    those are counted apart under their own names, and left out here)."""
    await call()
    await redis.config_resetstat()
    for _ in range(tries):
        await call()
    stats = await redis.info("commandstats")
    usec = sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in SENT)
    return usec / tries / 1000


async def _before(script: AsyncScript, audiences: int) -> None:
    """The snapshot before the aggregates, as ``/v1/status`` called it: every active audience
    and every live one (here: all of them), with their keys declared."""
    now_s = time.time()
    second = int(now_s)
    counters = [KEYS.applied_second(s) for s in range(second - MEASURE_WINDOW_S, second)]
    script_keys = [
        KEYS.backlog_total,
        KEYS.queue,
        KEYS.config,
        KEYS.workers,
        KEYS.leases,
        KEYS.dead_letters,
        *counters,
    ]
    ids = list(range(1, audiences + 1))
    for a in ids:
        script_keys += [KEYS.backlog(a), KEYS.stats(a)]
    await script(keys=script_keys, args=[int(now_s * 1000), len(counters), 0, *ids])


async def _status(scripts: Scripts) -> None:
    """What ``read_status`` asks Redis for the first page (Postgres names aside)."""
    page = await scripts.queue_state.busiest(DEFAULT_STATUS_PAGE_SIZE, None, ETA_EXACT_RANKS)
    await scripts.queue_state(time.time(), [a for a, _ in page.audiences], page)


async def status_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    scripts = Scripts(svc.redis, KEYS)
    top = Settings().metrics_top_audiences
    status: dict[int, float] = {}
    metrics: dict[int, float] = {}
    before = 0.0
    for audiences in sizes.status_audiences:
        await svc.reset()
        await _fill(scripts, audiences)
        totals = await scripts.queue_state(time.time())
        if totals.totals.audiences_with_work != audiences:
            raise RuntimeError(f"{totals.totals.audiences_with_work} audiences with work")
        status[audiences] = await _redis_ms(svc.redis, lambda: _status(scripts), TRIES)
        metrics[audiences] = await _redis_ms(svc.redis, lambda: read_snapshot(scripts, top), TRIES)
        if audiences == sizes.status_audiences[-1]:
            script = svc.redis.register_script(BEFORE)
            call = functools.partial(_before, script, audiences)
            before = await _redis_ms(svc.redis, call, BASELINE_TRIES)
    await svc.reset()
    largest = sizes.status_audiences[-1]
    rows: list[Row] = []
    for what, costs in (("status call (first page)", status), ("/metrics scrape", metrics)):
        steps = ", ".join(f"{n:,}: {ms:.3f} ms" for n, ms in costs.items())
        rows.append(
            Row(
                f"Redis time of a {what} at {largest:,} audiences with work ({steps})",
                f"{costs[largest]:.3f} ms",
                f"queue_state.lua before: {before:,.1f} ms",
                f"1/{before / costs[largest]:,.0f}" if costs[largest] else "-",
                f"≤ {TARGET_MS:g} ms",
                costs[largest] <= TARGET_MS,
            )
        )
    return rows
