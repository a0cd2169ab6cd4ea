"""The edge's Redis client: commands packed by hiredis in C rather than by redis-py in Python."""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import DataError

from core import redisconn


class _HiredisPacking:
    # redis-py's asyncio packer re-joins its output buffer once per argument; for an accept.lua
    # call with a thousand entries that was most of a request's CPU time. hiredis builds the
    # same bytes in one C call.
    def pack_command(self, *args: Any) -> list[bytes]:
        # Like redis-py: a command name with a space ("SCRIPT LOAD") is several arguments.
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            return [hiredis.pack_command(args)]
        except TypeError as e:
            raise DataError(str(e)) from e


def connect(url: str) -> aioredis.Redis:
    """A client for ``url`` (one server or a Sentinel group, ``core.redisconn``) whose
    connections pack with hiredis."""
    client: aioredis.Redis = redisconn.connect(url)
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return client
