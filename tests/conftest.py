"""Fixtures: real Postgres and Redis (the machine's, else embedded), a fresh database per run."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.migrations import migrate
from deploy import embedded
from schemas.keys import DEFAULT_TENANT
from schemas.settings import Settings
from schemas.tenants import DEFAULT_HOSTNAME
from tests.support.admin import Admin, admin_runner
from tests.support.edge import Client, create_key, running_edge

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
# Test runs on one machine each take a Redis database of their own (1-15), claimed with a lock key
# in database 0, so two runs never flush each other's data.
REDIS_LOCK_PREFIX = "cohortsync-test-lock:"
REDIS_LOCK_TTL_S = 3 * 3600


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[str, str]]:
    """(Postgres admin URL, Redis URL): configured or default when they answer, else embedded."""
    pg_url = os.environ.get("COHORTSYNC_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("COHORTSYNC_TEST_REDIS_URL", "")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cohortsync-test-")))
        if os.environ.get("COHORTSYNC_TEST_EMBEDDED") == "1" or not embedded.reachable(
            *_host_port(pg_url, 5432)
        ):
            pg_url = stack.enter_context(embedded.postgres(tmp / "pg"))
        if os.environ.get("COHORTSYNC_TEST_EMBEDDED") == "1" or not embedded.reachable(
            *_host_port(redis_url or DEFAULT_REDIS_URL, 6379)
        ):
            redis_url = stack.enter_context(embedded.redis(tmp / "redis"))
        elif not redis_url:
            redis_url = stack.enter_context(_own_redis_database(DEFAULT_REDIS_URL))
        yield pg_url, redis_url


@contextlib.contextmanager
def _own_redis_database(server_url: str) -> Iterator[str]:
    import redis as syncredis

    client = syncredis.Redis.from_url(server_url + "/0")
    try:
        for number in range(1, 16):
            lock = f"{REDIS_LOCK_PREFIX}{number}"
            if client.set(lock, os.getpid(), nx=True, ex=REDIS_LOCK_TTL_S):
                try:
                    yield f"{server_url}/{number}"
                finally:
                    client.delete(lock)
                return
        raise RuntimeError("every Redis test database (1-15) is taken by another test run")
    finally:
        client.close()


@pytest.fixture(scope="session")
async def database_url(services: tuple[str, str]) -> AsyncIterator[str]:
    """A database created for this test run and migrated; dropped afterwards."""
    admin_url, _ = services
    name = f"cohortsync_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = _with_database(admin_url, name)
    await migrate(url)
    yield url
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_url(services: tuple[str, str]) -> str:
    return services[1]


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, http_host="127.0.0.1")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, emptied before the test."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await pool.execute(
        "TRUNCATE memberships, audiences, api_keys, profile_attributes RESTART IDENTITY CASCADE"
    )
    # The default tenant alone, as migrated, and the next one added gets id 2.
    await pool.execute(
        f"""DELETE FROM tenants WHERE id <> {DEFAULT_TENANT};
            UPDATE tenants SET hostname = '{DEFAULT_HOSTNAME}', account_id = 1,
                rate_per_minute = NULL, burst = NULL;
            SELECT setval('tenants_id_seq', {DEFAULT_TENANT})"""
    )
    yield pool
    await pool.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on the test Redis database, flushed before the test."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def admin(database_url: str, redis_url: str) -> Admin:
    """``cohortsync-admin``'s ``main`` in-process on the test database and Redis."""
    return admin_runner(database_url, redis_url)


@pytest.fixture
async def key(db: asyncpg.Pool) -> str:
    """An API key for every surface (a test module narrows it by defining its own ``key``)."""
    return (await create_key(db))[1]


@pytest.fixture
async def client(settings: Settings, key: str, redis: aioredis.Redis) -> AsyncIterator[Client]:
    """The edge in-process on a real port, on a flushed Redis, sending ``key`` every request."""
    async with running_edge(settings, key) as client:
        yield client
