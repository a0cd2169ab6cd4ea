"""Every Lua script (``schemas/lua``) as a call: its keys, its arguments and its reply, together.

No other module builds a script's keys or arguments, and every key a script touches is declared
by its caller here, from the deployment's ``Keys``.
"""

from __future__ import annotations

from redis.asyncio import Redis

from core.scripts.backlogs import Backlogs
from core.scripts.dispatch import Dispatch
from core.scripts.leases import Leases
from core.scripts.queue_state import QueueState
from core.scripts.reclaim import Reclaim
from core.scripts.upgrade import Upgrade
from schemas.keys import Keys


class Scripts:
    """The scripts of one deployment, registered once on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.backlogs = Backlogs(redis, keys)
        self.dispatch = Dispatch(redis, keys)
        self.leases = Leases(redis, keys)
        self.queue_state = QueueState(redis, keys)
        self.reclaim = Reclaim(redis, keys)
        self.upgrade = Upgrade(redis, keys)
