"""``reclaim.lua``'s call: forget the audiences idle longest, a batch at a time."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import cast

from redis.asyncio import Redis

from core.scripts.backlogs import aggregate_keys
from schemas.keys import Keys
from schemas.lua import source


class Reclaim:
    """``reclaim.lua`` of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(source("reclaim"))

    async def __call__(self, idle_s: float, most: int) -> int:
        """Forget up to ``most`` audiences idle for ``idle_s`` or longer (their counters,
        version and clear), visiting every tenant Redis knows; returns how many. One round
        trip per tenant when none is due."""
        k = self._keys
        forgotten = 0
        known = await cast(Awaitable[set[bytes]], self._redis.smembers(k.tenants_known))
        for raw in sorted(known):
            if forgotten >= most:
                break
            forgotten += await self.tenant(int(raw), idle_s, most - forgotten)
        return forgotten

    async def tenant(self, tenant: int, idle_s: float, most: int) -> int:
        """``__call__`` for one tenant's audiences."""
        k = self._keys
        # This process's clock picks candidates; the script decides on Redis's.
        cutoff_ms = int((time.time() - idle_s) * 1000)
        idle = k.tenant(tenant).audiences_idle
        due = await self._redis.zrangebyscore(idle, "-inf", cutoff_ms, 0, most)
        if not due:
            return 0
        script_keys = [*aggregate_keys(k, tenant), k.versions, k.cleared]
        for raw in due:
            script_keys += [k.backlog(raw.decode()), k.stats(raw.decode())]
        args = [int(idle_s * 1000), tenant, *due]
        return int(await self._script(keys=script_keys, args=args))
