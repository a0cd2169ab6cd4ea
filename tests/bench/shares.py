"""Deficit round-robin: over a window, every audience with work gets the same share."""

from __future__ import annotations

import asyncio

from tests.bench.backlog import adds, fill
from tests.bench.processes import Children, environment, wait_for_workers
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row
from tests.support.redis_keys import KEYS

REPLICAS = 2
TARGET = 0.10
WARMUP_S = 5.0
# Generous guess of two replicas' rate with the limit lifted: each audience keeps work for the
# whole window.
GUESS_PER_S = 4000


async def _applied(svc: Services, audiences: list[int]) -> list[int]:
    """Each audience's applied count (finish.lua counts each change once, as it commits)."""
    async with svc.redis.pipeline(transaction=False) as pipe:
        for a in audiences:
            pipe.hget(KEYS.stats(a), "applied")
        return [int(v or 0) for v in await pipe.execute()]


async def share_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """``share_audiences`` audiences, each with more work than the window can apply, two
    replicas with the limit lifted; the changes each audience got applied during the window,
    against the mean. Today's dispatcher (a turn cut short was lost) spread them 6 to 32 per
    audience over 1,000 audiences (issue 10's figure)."""
    await svc.reset()
    n = sizes.share_audiences
    audiences = [await svc.new_audience(f"share-{i}") for i in range(n)]
    per_audience = int(GUESS_PER_S * (WARMUP_S + sizes.share_window_s) / n) + 50
    for a in audiences:
        await fill(svc.redis_url, a, adds(per_audience))
    env = environment(svc.database_url, svc.redis_url, rate_limit_per_minute=0)
    workers = [await children.worker(env) for _ in range(REPLICAS)]
    await wait_for_workers(svc.redis, KEYS, workers)
    await asyncio.sleep(WARMUP_S)
    before = await _applied(svc, audiences)
    await asyncio.sleep(sizes.share_window_s)
    after = await _applied(svc, audiences)
    await asyncio.gather(*(w.stop() for w in workers))
    if min(after) >= per_audience:
        raise RuntimeError("an audience ran out of work inside the window")
    got = [b - a for a, b in zip(before, after, strict=True)]
    mean = sum(got) / n
    if mean < 1:
        raise RuntimeError("nothing was applied in the window")
    spread = max(abs(g - mean) for g in got) / mean
    await svc.reset()
    return [
        Row(
            f"DRR share spread, {n:,} audiences with work, {REPLICAS} replicas, limit lifted, "
            f"{sizes.share_window_s:.0f} s",
            f"{min(got)} to {max(got)} per audience (±{spread:.1%})",
            f"equal shares: {mean:.1f} per audience",
            f"±{spread:.1%}",
            f"±{TARGET:.0%}",
            spread <= TARGET,
        )
    ]
