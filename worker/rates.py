"""The rate in force for each tenant, as every replica's dispatcher gives out slots.

A tenant's own rate (``tenants.rate_per_minute`` / ``burst`` in Postgres, set by
``cohortsync-admin tenant set-rate``) wins; else the deployment's default: the runtime override
in ``Keys.config`` (``cohortsync-admin set-rate``), else this replica's settings. Every replica
reads both again every ``REFRESH_S``, so a change reaches all of them within about a second.
The default and each tenant's rate are published in Redis (``Keys.config``,
``Keys.tenant_rates``) for the edge and the admin, which show progress and ETA at the rate the
workers enforce, not the reader's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any, Protocol, cast

import asyncpg
from redis.asyncio import Redis

from core.scripts.dispatch import Rate, reschedule
from schemas import keys
from schemas.keys import Keys
from schemas.settings import Settings
from worker.errors import describe, raise_if_cancelled

logger = logging.getLogger(__name__)

REFRESH_S = 1.0


class Rates(Protocol):
    """What the dispatcher asks: each tenant's rate, and the fleet's cap."""

    fleet: Rate

    def of(self, tenant: int) -> Rate: ...


class SettingsRates:
    """Every tenant at the settings' rate (no tenant of its own, no override): for a dispatcher
    used on its own."""

    def __init__(self, settings: Settings) -> None:
        self.default = Rate(settings.rate_limit_per_minute, settings.rate_burst)
        self.fleet = Rate(settings.fleet_rate_limit_per_minute, settings.rate_burst)

    def of(self, tenant: int) -> Rate:
        return self.default


class TenantRates:
    """``rates.of(tenant)``: the rate a tenant's changes are dispatched at; ``rates.fleet``: the
    fleet-wide cap (0: none)."""

    def __init__(self, settings: Settings, redis: Redis, keys_: Keys, db: Any) -> None:
        self._own = Rate(settings.rate_limit_per_minute, settings.rate_burst)
        self.default = self._own
        self.fleet = Rate(settings.fleet_rate_limit_per_minute, settings.rate_burst)
        self._tenants: dict[int, Rate] = {}
        self._redis = redis
        self._keys = keys_
        self._db = db
        self._task: asyncio.Task[None] | None = None
        self._published: dict[str, str] = {}
        self._refreshed = False

    def of(self, tenant: int) -> Rate:
        return self._tenants.get(tenant, self.default)

    @property
    def rate_per_minute(self) -> int:
        """The default rate in force (0: unlimited)."""
        return self.default.per_minute

    async def refresh(self) -> None:
        """Read the default's override and every tenant's own rate again; publish them."""
        cfg = await cast(
            Awaitable[list[bytes | None]],
            self._redis.hmget(self._keys.config, [keys.CONFIG_RATE, keys.CONFIG_BURST]),
        )
        rate, burst = self._own
        before_default = self.default
        self.default = Rate(
            int(cfg[0]) if cfg[0] is not None else rate,
            int(cfg[1]) if cfg[1] is not None else burst,
        )
        try:
            rows = await self._db.fetch(
                "SELECT id, rate_per_minute, burst FROM tenants"
                " WHERE rate_per_minute IS NOT NULL OR burst IS NOT NULL"
            )
        except asyncpg.UndefinedTableError:
            rows = []  # a database not migrated to tenants yet: every tenant at the default
        default_changed = self.default != before_default
        before = self._tenants
        self._tenants = {
            r["id"]: Rate(
                r["rate_per_minute"] if r["rate_per_minute"] is not None else self.default[0],
                r["burst"] if r["burst"] is not None else self.default[1],
            )
            for r in rows
        }
        changed = {t for t in {*before, *self._tenants} if before.get(t) != self._tenants.get(t)}
        if self._refreshed and (default_changed or changed):
            await reschedule(self._redis, self._keys, None if default_changed else [*changed])
        self._refreshed = True
        await self._publish()

    async def _publish(self) -> None:
        rates = {str(t): f"{r.per_minute}:{r.burst}" for t, r in self._tenants.items()}
        own = {keys.CONFIG_WORKERS_RATE: self._own[0], keys.CONFIG_WORKERS_BURST: self._own[1]}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._keys.config, mapping=own)
            if rates != self._published:
                pipe.delete(self._keys.tenant_rates)
                if rates:
                    pipe.hset(self._keys.tenant_rates, mapping=rates)
            await pipe.execute()
        self._published = rates

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self.refresh()
                failures = 0
            except Exception as e:
                raise_if_cancelled(e)
                failures += 1
                if failures == 1:
                    logger.warning(
                        "could not read the tenants' rates, keeping the last: %s", describe(e)
                    )
            await asyncio.sleep(REFRESH_S)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="cohortsync-rates")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
