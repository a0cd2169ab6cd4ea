"""The arq job: one membership change waits for its rate-limit slot, then is group-committed."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from arq import Retry

from schemas import keys
from schemas.jobs import Change, DeadLetter
from worker import logs
from worker.errors import backoff_s, describe, is_retried
from worker.leases import Finished
from worker.state import JobContext

logger = logging.getLogger(__name__)

# While Postgres or Redis is down every job fails the same way; say so once per interval.
TRANSIENT_LOG_INTERVAL_S = 10.0
_last_transient_log = 0.0


_encode = msgspec.json.Encoder().encode


async def apply_change(
    ctx: JobContext, audience_id: int, profile_id: str, member: bool, version: int
) -> bool:
    """Apply one change; True if the stored state is this change, False if it was stale or dead.

    Transient failures raise ``arq.Retry`` with back-off; arq never gives up on them
    (``max_tries`` is effectively unbounded). Permanent ones go to ``cs:dead`` once, with the
    reason. The outcome is left in ``state.outcomes`` for the worker, which counts it when it
    finishes the job (a re-run of a job whose change was committed finds it stored: applied).
    """
    state = ctx["cohortsync"]
    args = [audience_id, profile_id, member, version]
    loop = asyncio.get_running_loop()
    budget = asyncio.timeout(state.job_budget_s)
    try:
        change = msgspec.convert(args, Change)
        async with budget:
            started = loop.time()
            await state.limiter.acquire()
            state.metrics.limiter_wait.observe(loop.time() - started)
            applied = await state.applier.apply(change)
    except Exception as e:
        if budget.expired():
            # Still waiting for its turn before arq's own timeout would drop it: queue again.
            raise Retry() from e
        if is_retried(e):
            _log_transient(e)
            raise Retry(defer=backoff_s(ctx["job_try"])) from e
        logger.error(
            "change %s failed permanently, kept in %s: %s",
            ctx["job_id"],
            keys.DEAD_LETTERS,
            describe(e),
        )
        # Kept by the worker when it finishes the job, in the step that counts it (once).
        letter = DeadLetter(ctx["job_id"], args, describe(e), int(time.time() * 1000))
        state.outcomes[ctx["job_id"]] = Finished(_audience(audience_id), "dead", _encode(letter))
        state.metrics.dropped["dead_letter"] += 1
        _log_finished(ctx, audience_id, "dead_letter")
        return False
    state.outcomes[ctx["job_id"]] = Finished(audience_id, "applied" if applied else "dropped")
    latency_s = _log_finished(ctx, audience_id, "applied" if applied else "stale")
    if applied:
        state.metrics.applied += 1
        state.metrics.job_latency.observe(latency_s)
    else:
        state.metrics.dropped["stale"] += 1
    return applied


def _log_finished(ctx: JobContext, audience_id: int, outcome: logs.Outcome) -> float:
    latency_s = time.time() - ctx["enqueue_time"].timestamp()
    logs.job_finished(ctx["job_id"], audience_id, outcome, ctx["job_try"], latency_s)
    return latency_s


def _audience(value: object) -> int:
    """The audience of malformed job arguments, for its counters: 0 when there is none."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


def _log_transient(error: Exception) -> None:
    global _last_transient_log
    now = time.monotonic()
    if now - _last_transient_log >= TRANSIENT_LOG_INTERVAL_S:
        _last_transient_log = now
        logger.warning("changes are retried with back-off: %s", describe(error))
