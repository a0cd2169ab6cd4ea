"""The arq job: one membership change, due at its rate slot, group-committed with others."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from arq import Retry

from schemas.jobs import Change, DeadLetter
from schemas.keys import DEFAULT_TENANT
from worker import logs
from worker.errors import backoff_s, describe, is_retried
from worker.leases import Finished
from worker.state import JobContext

logger = logging.getLogger(__name__)

# While Postgres or Redis is down every job fails the same way; say so once per interval.
TRANSIENT_LOG_INTERVAL_S = 10.0
_last_transient_log = 0.0


_encode = msgspec.json.Encoder().encode


async def apply_change(ctx: JobContext, change: Change | list[Any]) -> bool:
    """Apply one change; True if the stored state is this change, False if it was stale or dead.

    ``change`` is a list only when the job's payload held something that is not a change
    (``schemas.jobs.deserialize_job``): it is dead-lettered as it is.
    Transient failures raise ``arq.Retry`` with back-off; arq never gives up on them
    (``max_tries`` is effectively unbounded). Permanent ones go to the dead letters once, with
    the reason. The outcome is left in ``state.outcomes`` for the worker, which counts it when it
    finishes the job (a re-run of a job whose change was committed finds it stored: applied).
    """
    state = ctx["cohortsync"]
    budget = asyncio.timeout(state.job_budget_s)
    try:
        if not isinstance(change, Change):
            change = msgspec.convert(change, Change)
        async with budget:
            # Its rate slot is its due time: dispatch queued it at its tenant's next slot.
            state.metrics.limiter_wait.observe(
                max(0.0, ctx["score"] / 1000 - ctx["enqueue_time"].timestamp())
            )
            applied = await state.applier.apply(change)
    except Exception as e:
        if budget.expired():
            # Still waiting for its turn before arq's own timeout would drop it: queue again.
            raise Retry() from e
        if is_retried(e):
            _log_transient(e)
            raise Retry(defer=backoff_s(ctx["job_try"])) from e
        logger.error(
            "change %s failed permanently, kept in the dead letters: %s",
            ctx["job_id"],
            describe(e),
        )
        args = _as_args(change)
        audience_id = _audience(args[0] if args else None)
        tenant = _audience(args[4]) if len(args) > 4 else DEFAULT_TENANT
        # Kept by the worker when it finishes the job, in the step that counts it (once).
        letter = DeadLetter(ctx["job_id"], args, describe(e), int(time.time() * 1000))
        state.outcomes[ctx["job_id"]] = Finished(audience_id, "dead", _encode(letter), tenant)
        state.metrics.dropped["dead_letter"] += 1
        _log_finished(ctx, audience_id, "dead_letter")
        return False
    audience_id = change.audience_id
    state.outcomes[ctx["job_id"]] = Finished(
        audience_id, "applied" if applied else "dropped", b"", change.tenant
    )
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


def _as_args(change: object) -> list[Any]:
    """A change as a dead letter keeps it: its fields, or what the job held instead."""
    if isinstance(change, Change):
        fields: list[Any] = msgspec.to_builtins(change)
        return fields
    return change if isinstance(change, list) else [change]


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
