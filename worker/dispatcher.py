"""The dispatcher: moves backlog entries into arq's queue, round-robin, never past the watermark."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.scripts import Scripts
from core.scripts.dispatch import DispatchResult
from schemas.settings import Settings
from worker.errors import describe, raise_if_cancelled
from worker.metrics import WorkerMetrics
from worker.rates import Rates, SettingsRates

logger = logging.getLogger(__name__)

# Nothing to move (empty backlogs or a full queue): ask again after this long.
IDLE_S = 0.03
# Some jobs created but not a full batch: the queue is nearly full, a shorter pause will do.
PARTIAL_S = 0.005
MAX_BACKOFF_S = 5.0


class Dispatcher:
    """One per replica; ``dispatch.lua`` is atomic and checks what it was told, so any number
    may run against one Redis."""

    def __init__(
        self,
        scripts: Scripts,
        settings: Settings,
        rates: Rates | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._dispatch = scripts.dispatch
        self._batch = settings.dispatch_batch
        self._quantum = settings.dispatch_quantum
        self._watermark = settings.dispatch_watermark
        self._rates = rates or SettingsRates(settings)
        self._metrics = metrics or WorkerMetrics()
        self._task: asyncio.Task[None] | None = None
        # Ends the loop at its next turn even if a cancellation got lost (see raise_if_cancelled).
        self._stopping = False

    async def dispatch_once(self) -> DispatchResult:
        rates = self._rates
        result = await self._dispatch(
            self._watermark, self._batch, self._quantum, rates.of, rates.fleet
        )
        self._metrics.dropped["stale"] += result.dropped
        return result

    async def run(self) -> None:
        """Dispatch until cancelled; Redis errors are logged and waited out, never fatal."""
        failures = 0
        while not self._stopping:
            try:
                result = await self.dispatch_once()
            except Exception as e:
                raise_if_cancelled(e)
                failures += 1
                if failures == 1:
                    logger.warning("dispatch failed, retrying with back-off: %s", describe(e))
                await asyncio.sleep(min(MAX_BACKOFF_S, 0.05 * 2 ** min(failures, 10)))
                continue
            if failures:
                logger.info("dispatch recovered after %d failed attempts", failures)
                failures = 0
            if result.created >= self._batch or (result.dropped and result.backlog_total):
                await asyncio.sleep(0)
            elif result.created or result.short:
                await asyncio.sleep(PARTIAL_S)
            else:
                await asyncio.sleep(IDLE_S)

    def start(self) -> None:
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="cohortsync-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
