"""What the edge keeps between requests: typed app and request keys, scripts, small caches."""

from __future__ import annotations

import enum
from typing import Generic, Literal, TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis
from aiohttp import ChainMapProxy, web

from core.scripts import Scripts
from schemas.settings import Settings

K = TypeVar("K")
V = TypeVar("V")


class Miss(enum.Enum):
    """What a cache lookup answers when it knows nothing (a cached ``None`` is an answer)."""

    MISS = 0


MISS: Literal[Miss.MISS] = Miss.MISS


class TtlCache(Generic[K, V]):
    """A dict whose entries expire; bounded, so unknown keys cannot grow it without limit."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: dict[K, tuple[float, V]] = {}
        self._max_entries = max_entries

    def get(self, key: K, now: float) -> V | Literal[Miss.MISS]:
        entry = self._entries.get(key)
        if entry is None:
            return MISS
        if entry[0] <= now:
            del self._entries[key]
            return MISS
        return entry[1]

    def put(self, key: K, value: V, ttl_s: float, now: float) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
        self._entries[key] = (now + ttl_s, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)


class Tenant(msgspec.Struct, frozen=True):
    """The Talon.One deployment an API key belongs to (a ``tenants`` row)."""

    id: int
    hostname: str
    account_id: int


class ApiKey(msgspec.Struct, frozen=True):
    """The API key a request authenticated with; ``scope`` None means every surface.
    ``tenant`` is None only for an ``ops`` key, which reads every tenant's status."""

    id: int
    scope: str | None
    tenant: Tenant | None


SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", asyncpg.Pool)
REDIS = web.AppKey("redis", aioredis.Redis)
# The Lua scripts on REDIS, and the deployment's keys (``SCRIPTS.keys``).
SCRIPTS = web.AppKey("scripts", Scripts)
# Key hash -> the key, or None for an unknown or revoked key (cached briefly).
API_KEYS = web.AppKey("api_keys", TtlCache[bytes, ApiKey | None])
# (tenant id, audience id) known to be a live audience of that tenant; only positive answers
# are cached.
LIVE_AUDIENCES = web.AppKey("live_audiences", TtlCache[tuple[int, int], bool])
# Hostname -> the id of the tenant it names, or None (for the default tenant's keys, which may
# send any destination-hostname but another tenant's).
TENANT_HOSTNAMES = web.AppKey("tenant_hostnames", TtlCache[str, int | None])

API_KEY = web.RequestKey("api_key", ApiKey)

# Where services find the keys above: the root application that holds them, or, in a surface's
# sub-application, the request's ``config_dict`` (which reaches the root's).
State = web.Application | ChainMapProxy
