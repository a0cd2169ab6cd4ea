"""Which failures a job retries with back-off and which send its change to the dead letters."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from core.errors import is_transient

MAX_BACKOFF_S = 60.0


class PermanentError(Exception):
    """A change that cannot be applied however often it is tried."""


def is_retried(exc: BaseException) -> bool:
    """A dependency is failing (core.errors), or asyncpg's InterfaceError: a connection closed
    or released under the job, or the pool closing as this replica stops. The job runs again,
    here or on another replica, rather than sending its change to the dead letters."""
    return is_transient(exc) or isinstance(exc, asyncpg.InterfaceError)


def backoff_s(job_try: int) -> float:
    """Exponential back-off with jitter for the ``job_try``-th failed try (1-based), capped."""
    ceiling = min(MAX_BACKOFF_S, 0.5 * 2 ** min(max(job_try, 1) - 1, 16))
    # Full jitter keeps replicas that failed together from retrying together.
    return random.uniform(ceiling / 2, ceiling)


def describe(exc: BaseException) -> str:
    """A one-line account of an error for logs and dead letters; never a connection string."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def raise_if_cancelled(error: BaseException) -> None:
    """Re-raise the cancellation of the running task that ``error`` stands in for.

    redis-py can turn a task's cancellation during a read into a ``TimeoutError`` (its socket
    timeout): a loop that waits out Redis errors would then swallow its own stop and never end.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error
