"""Which failures a job retries with back-off and which send its change to the dead letters."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import redis.exceptions as redis_errors

# A failure of the path to Postgres or Redis, or of a transaction that would succeed if re-run.
# Everything else (bad data, a broken statement) fails the same way on every try.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionError and TimeoutError (asyncio's too, since 3.11)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # connection closed or released under us, pool closing
    # The client's own state machine after a connection broke mid-statement ("cannot switch to
    # state 12; another operation is in progress"): the next connection works.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, during failover
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
)

MAX_BACKOFF_S = 60.0


class PermanentError(Exception):
    """A change that cannot be applied however often it is tried."""


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


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
