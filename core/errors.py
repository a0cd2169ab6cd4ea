"""Which failures mean a dependency is failing (retry later) rather than a request or job that
fails the same way on every try: the worker retries them, the edge answers 503."""

from __future__ import annotations

import asyncpg
import redis.exceptions as redis_errors

# A failure of the path to Postgres or Redis, or of a transaction that would succeed if re-run.
# Everything else (bad data, a broken statement, our own bug) fails the same way on every try.
# Not asyncpg's InterfaceError: that is the client used wrongly or after its pool closed, which
# the edge answers with a 500 (a worker retries it for its own reason, worker.errors.is_retried).
TRANSIENT: tuple[type[BaseException], ...] = (
    # Includes ConnectionError, TimeoutError (asyncio's too, since 3.11) and socket.gaierror: a
    # host that is down, slow or not resolvable now.
    OSError,
    asyncpg.PostgresConnectionError,  # the connection broke or could not be made
    # The client's own state machine after a connection broke mid-statement ("cannot switch to
    # state 12; another operation is in progress"): the next connection works.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    # Admin shutdown, crash shutdown, cannot connect now (starting up), statement cancelled.
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.LockNotAvailableError,  # lock_timeout: the holder lets go
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, during failover
    redis_errors.ConnectionError,  # refused, reset, or closed by the server
    redis_errors.TimeoutError,  # the socket timeout: Redis busy or unreachable
    redis_errors.ReadOnlyError,  # a replica, during failover
    redis_errors.TryAgainError,  # a cluster slot being migrated
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying later: a dependency, not the work, is failing."""
    return isinstance(exc, TRANSIENT)
