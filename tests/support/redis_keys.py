"""The Redis keys and scripts of the tests' deployment: the default ``COHORTSYNC_QUEUE_NAME``,
as the ``settings`` fixture has it."""

from __future__ import annotations

import redis.asyncio as aioredis

from core.scripts import Scripts
from schemas.keys import Keys
from schemas.settings import Settings

KEYS = Keys(Settings().queue_name)


def scripts(redis: aioredis.Redis) -> Scripts:
    """The scripts on ``redis`` for the tests' deployment."""
    return Scripts(redis, KEYS)
