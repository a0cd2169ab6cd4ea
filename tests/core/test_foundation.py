"""Settings, migrations and Lua scripts: the pieces every process stands on."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.migrations import migrate, pending
from schemas import keys
from schemas.settings import Settings, SettingsError
from tests.support.redis_keys import KEYS, scripts


def test_settings_defaults_and_env() -> None:
    s = Settings.from_env({"COHORTSYNC_RATE_LIMIT_PER_MINUTE": "600", "OTHER": "x"})
    assert s.rate_limit_per_minute == 600
    assert Settings.from_env({}).rate_limit_per_minute == 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [("COHORTSYNC_HTTP_PORT", "eighty"), ("COHORTSYNC_RATE_LIMIT_PER_MINUTE", "-5")],
)
def test_bad_setting_names_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_log_level_is_a_logging_level_or_names_its_variable() -> None:
    assert Settings(log_level="warning").log_level_number() == logging.WARNING
    with pytest.raises(SettingsError, match="COHORTSYNC_LOG_LEVEL: unknown level 'LOUD'"):
        Settings(log_level="LOUD").log_level_number()


async def test_concurrent_migrations_do_not_collide(database_url: str) -> None:
    results = await asyncio.gather(*(migrate(database_url) for _ in range(4)))
    assert all(r == [] for r in results)  # the session fixture applied them already
    conn = await asyncpg.connect(database_url)
    try:
        assert await pending(conn) == []
    finally:
        await conn.close()


async def test_accept_assigns_monotonic_versions_across_flush(redis: aioredis.Redis) -> None:
    backlogs = scripts(redis).backlogs
    # Accepted, with the tenant's pending after (no worker published a rate yet).
    accepted = await backlogs.accept({7: ["aR1", "dR2"]}, max_backlog=1000)
    assert accepted == ("accepted", 2, 2, None)
    first = [keys.decode_entry(e.decode()) for e in await redis.lrange(KEYS.backlog(7), 0, -1)]  # type: ignore[misc]
    assert [(a, p) for a, p, _ in first] == [("add", "R1"), ("delete", "R2")]
    assert first[1][2] == first[0][2] + 1
    await redis.flushdb()
    assert (await backlogs.accept({7: ["aR1", "dR2"]}, max_backlog=1000))[:2] == ("accepted", 2)
    second = [keys.decode_entry(e.decode()) for e in await redis.lrange(KEYS.backlog(7), 0, -1)]  # type: ignore[misc]
    assert second[0][2] > first[1][2]
    # Over the bound: refused whole.
    refused = await backlogs.accept({7: ["aR1", "aR2"]}, max_backlog=3)
    assert refused == ("full", 2, 0, None)
    assert await redis.llen(KEYS.backlog(7)) == 2  # type: ignore[misc]
