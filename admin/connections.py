"""The Postgres and Redis connections a command opens, and how to name them safely."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import asyncpg
import redis.asyncio as aioredis

from core import redisconn
from core.scripts import Scripts
from schemas import redisurl
from schemas.keys import Keys
from schemas.settings import Settings

CONNECT_TIMEOUT_S = 10.0


def describe_url(url: str) -> str:
    """``host:port/db`` of a Postgres or Redis URL: safe to print, it never holds a password."""
    if url.startswith(f"{redisurl.SENTINEL_SCHEME}://"):
        try:
            return redisurl.describe(url)
        except ValueError:
            return "<unparsable URL>"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    # libpq-style URLs may name the host (or a socket directory) in the query string.
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    where = f"{host}:{port}" if port else host
    return f"{where}{parts.path}" if parts.path not in ("", "/") else where


async def connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)


def redis_client(redis_url: str) -> aioredis.Redis:
    return redisconn.connect(redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S)


def scripts(client: aioredis.Redis, settings: Settings) -> Scripts:
    """The scripts on ``client`` for the deployment ``settings`` name."""
    return Scripts(client, Keys(settings.queue_name))
