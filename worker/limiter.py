"""The shared rate limit: one GCRA in Redis, slots for many waiting jobs reserved per round trip."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from core.scripts.limiter import Grant, RateLimit
from schemas import keys
from worker.errors import raise_if_cancelled

# How far ahead of now this process books slots. Jobs beyond it wait here, holding no slot, so a
# job that times out wastes none and a runtime rate change takes effect within about this long.
DEFAULT_HORIZON_S = 2.0
# While the limit is lifted, ask Redis again after this long rather than once per job.
UNLIMITED_RECHECK_S = 0.25

# Part of the burst the limiter keeps back for changes committing late and bunching up (a
# replica that wakes late for its slots commits them with the next ones): measured 2-4 slots of
# 10 ms at 6000/min on a loaded 2-core machine.
COMMIT_JITTER_US = 50_000


class Limiter:
    """``await limiter.acquire()`` returns at this job's slot of the rate shared by all replicas.

    Concurrent acquisitions are coalesced: one script call reserves consecutive slots for every
    job waiting at that moment, then each job sleeps until its own slot. While the limit is
    lifted (rate 0), Redis is asked again only every ``UNLIMITED_RECHECK_S``.
    """

    def __init__(
        self,
        script: RateLimit,
        *,
        rate_per_minute: int,
        burst: int,
        horizon_s: float = DEFAULT_HORIZON_S,
    ) -> None:
        self._script = script
        self._defaults = (rate_per_minute, burst)
        self._horizon_s = horizon_s
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._booker: asyncio.Task[None] | None = None
        # Loop time of the last slot this process booked, and the interval last in force.
        self._booked_until = 0.0
        self._interval_s = 60.0 / rate_per_minute if rate_per_minute else 0.0
        self.rate_per_minute = rate_per_minute
        self.calls = 0
        self._unlimited_until = 0.0

    def defaults_in_config(self) -> dict[str, int]:
        """This replica's own rate and burst, as published in ``Keys.config`` for status."""
        rate, burst = self._defaults
        return {keys.CONFIG_WORKERS_RATE: rate, keys.CONFIG_WORKERS_BURST: burst}

    async def reserve(self, n: int) -> Grant:
        """Reserve ``n`` consecutive slots in one round trip (the caller must honour them)."""
        grant = await self._script.reserve(n, *self._defaults, COMMIT_JITTER_US)
        self.calls += 1
        self.rate_per_minute = grant.rate_per_minute
        if not self.rate_per_minute:
            self._unlimited_until = asyncio.get_running_loop().time() + UNLIMITED_RECHECK_S
        self._interval_s = grant.interval_s
        return grant

    async def acquire(self) -> None:
        """Wait for this caller's slot; raises what reaching Redis raised."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._unlimited_until:
            return
        slot: asyncio.Future[float] = loop.create_future()
        self._waiters.append(slot)
        if self._booker is None or self._booker.done():
            self._booker = asyncio.create_task(self._book())
        at = await slot
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._booker is not None:
            self._booker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._booker
        while self._waiters:
            self._waiters.popleft().cancel()

    async def _book(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiters:
            ahead = self._booked_until - loop.time()
            if ahead > self._horizon_s:
                await asyncio.sleep(ahead - self._horizon_s)
                continue
            n = len(self._waiters)
            if self.calls == 0:
                # The rate in force (the config hash may override the default) is not known yet.
                n = 1
            elif self._interval_s > 0:
                room = int((self._horizon_s - max(ahead, 0.0)) / self._interval_s)
                n = min(n, max(1, room))
            batch = [w for w in (self._waiters.popleft() for _ in range(n)) if not w.done()]
            if not batch:
                continue
            try:
                grant = await self.reserve(len(batch))
            except Exception as e:
                for w in batch:
                    if not w.done():
                        w.set_exception(e)
                raise_if_cancelled(e)
                continue
            except BaseException:
                for w in batch:
                    w.cancel()
                raise
            now = loop.time()
            for k, w in enumerate(batch):
                if not w.done():
                    w.set_result(now + grant.first_s + k * grant.interval_s)
            self._booked_until = now + grant.first_s + (len(batch) - 1) * grant.interval_s
