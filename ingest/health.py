"""What the readiness probe and ``cohortsync_dependency_up`` check: Redis, Postgres, migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from core.migrations import pending
from ingest.state import DB, REDIS

# A probe that hangs is as bad as one that fails; answer within a kubelet's default timeout.
CHECK_TIMEOUT_S = 0.9


async def _check_redis(app: web.Application) -> str | None:
    await app[REDIS].ping()
    return None


async def _check_postgres(app: web.Application) -> str | None:
    async with app[DB].acquire() as conn:
        missing = await pending(conn)
    return f"migrations pending: {missing}" if missing else None


async def _run(check: Coroutine[Any, Any, str | None]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            problem = await check
    except TimeoutError:
        return "timed out"
    except Exception as e:
        # The exception's type only: its text may carry hosts or credentials.
        return f"unreachable: {type(e).__name__}"
    return problem or "ok"


async def check_dependencies(app: web.Application) -> dict[str, str]:
    """Each dependency ("redis", "postgres") -> "ok" or what is wrong, checked at once; /readyz
    and the ``cohortsync_dependency_up`` gauge both read this."""
    redis_state, postgres_state = await asyncio.gather(
        _run(_check_redis(app)), _run(_check_postgres(app))
    )
    return {"redis": redis_state, "postgres": postgres_state}
