"""The shared rate limit's script: reserve consecutive slots of one GCRA on Redis's clock."""

from __future__ import annotations

from typing import NamedTuple

from redis.asyncio import Redis

from schemas.keys import Keys
from schemas.lua import source


class Grant(NamedTuple):
    """What one ``limiter.lua`` call reserved: slot k is ``first_s + k * interval_s`` from now."""

    first_s: float
    interval_s: float
    rate_per_minute: int


class RateLimit:
    """``limiter.lua`` of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._script = redis.register_script(source("limiter"))

    async def reserve(self, n: int, rate_per_minute: int, burst: int, jitter_us: int) -> Grant:
        """Reserve ``n`` slots at the rate in force: the runtime override in the config hash,
        else ``rate_per_minute`` and ``burst``; ``jitter_us`` of the burst is kept back."""
        first_us, interval_us, rate = await self._script(
            keys=[self._keys.limiter, self._keys.config],
            args=[n, rate_per_minute, burst, jitter_us],
        )
        return Grant(int(first_us) / 1e6, int(interval_us) / 1e6, int(rate))
