"""Expected failures, each told as one line on stderr (exit code 1) instead of a traceback."""

from __future__ import annotations

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from admin.connections import describe_url
from admin.output import PROG
from schemas.settings import Settings


class AdminError(Exception):
    """An expected failure: reported as one line on stderr, exit code 1."""

    exit_code = 1


class UsageError(AdminError):
    """A command asked for something that cannot be (an unknown tenant, a hostname taken, a
    number out of range): one line on stderr, exit code 2, as argparse answers a bad argument."""

    exit_code = 2


def explain(error: BaseException, settings: Settings) -> str | None:
    """One line for an expected failure (a service unreachable, no tables yet), else None."""
    if isinstance(error, AdminError):
        return str(error)
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        return f"cannot reach Redis at {describe_url(settings.redis_url)}: {error}"
    if isinstance(error, RedisError):
        return f"Redis at {describe_url(settings.redis_url)}: {error}"
    if isinstance(error, asyncpg.UndefinedTableError):
        return f"the database has no cohortsync tables yet; run: {PROG} migrate"
    if isinstance(error, OSError | TimeoutError):
        return f"cannot reach Postgres at {describe_url(settings.database_url)}: {error}"
    if isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"Postgres at {describe_url(settings.database_url)}: {error}"
    return None
