"""A replica's claim of 200 jobs while other replicas run many: its cost must not grow with them
(running jobs are off arq's queue, under leases)."""

from __future__ import annotations

import statistics
import time

from core.scripts import Scripts
from schemas.keys import Keys
from tests.bench.processes import Children
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, times

KEYS = Keys("bench-claims")
QUEUE = KEYS.queue
ROOM = 200
TRIES = 25
# Cost at the largest size against the smallest: flat means within noise of 1.
TARGET_RATIO = 2.0


async def _claim_ms(svc: Services, held: int) -> float:
    await svc.reset()
    now_ms = int(time.time() * 1000)
    for first in range(0, held, 10_000):
        batch = {f"held:{i}": now_ms + 600_000 for i in range(first, min(held, first + 10_000))}
        await svc.redis.zadd(KEYS.leases, batch)
    leases = Scripts(svc.redis, KEYS).leases
    spent: list[float] = []
    for n in range(TRIES):
        await svc.redis.zadd(QUEUE, {f"free:{n}:{i}": now_ms - 1000 + i for i in range(ROOM)})
        began = time.perf_counter()
        claimed = await leases.claim(ROOM)
        spent.append(time.perf_counter() - began)
        if len(claimed) != ROOM:
            raise RuntimeError(f"claimed {len(claimed)} of {ROOM}")
    return statistics.median(spent) * 1000


async def claim_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    costs = {held: await _claim_ms(svc, held) for held in sizes.claim_held}
    await svc.reset()
    smallest, largest = sizes.claim_held[0], sizes.claim_held[-1]
    ratio = costs[largest] / costs[smallest]
    steps = ", ".join(f"{held:,}: {ms:.2f} ms" for held, ms in costs.items())
    return [
        Row(
            f"claim of {ROOM} jobs with {largest:,} running elsewhere ({steps})",
            f"{costs[largest]:.2f} ms",
            f"{smallest:,} running elsewhere: {costs[smallest]:.2f} ms",
            times(ratio),
            f"≤ {TARGET_RATIO:g}x (flat)",
            ratio <= TARGET_RATIO,
        )
    ]
