"""What the bench runs against: its own redis-server and a Postgres database made for the run."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from core.migrations import migrate
from deploy import embedded
from schemas.keys import DEFAULT_TENANT

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    db: asyncpg.Pool
    redis: aioredis.Redis
    work_dir: Path

    async def reset(self) -> None:
        """Empty Redis and every table, so each measurement starts from nothing (but the
        default tenant, which the migrations made)."""
        await self.redis.flushall()
        await self.db.execute(
            "TRUNCATE memberships, audiences, api_keys, profile_attributes RESTART IDENTITY CASCADE"
        )
        await self.db.execute("DELETE FROM tenants WHERE id <> $1", DEFAULT_TENANT)
        await self.db.execute("SELECT setval('tenants_id_seq', $1)", DEFAULT_TENANT)

    async def new_audience(self, name: str) -> int:
        audience_id: int = await self.db.fetchval(
            "INSERT INTO audiences (account_id, name) VALUES (1, $1) RETURNING id", name
        )
        return audience_id


@contextlib.asynccontextmanager
async def services(work_dir: Path) -> AsyncIterator[Services]:
    """A redis-server of our own (the machine's Redis is shared; its memory and CPU would blur
    the numbers) and a fresh, migrated database on the machine's Postgres, else an embedded one.
    Everything is stopped or dropped on the way out."""
    admin_url = os.environ.get("COHORTSYNC_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    parts = urlsplit(admin_url)
    with contextlib.ExitStack() as stack:
        if not embedded.reachable(parts.hostname or "127.0.0.1", parts.port or 5432):
            admin_url = stack.enter_context(embedded.postgres(work_dir / "pg"))
        redis_url = stack.enter_context(embedded.redis(work_dir / "redis"))
        name = f"cohortsync_bench_{uuid.uuid4().hex[:12]}"
        await _execute(admin_url, f'CREATE DATABASE "{name}"')
        try:
            database_url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
            await migrate(database_url)
            db = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
            redis = aioredis.Redis.from_url(redis_url)
            try:
                yield Services(database_url, redis_url, db, redis, work_dir)
            finally:
                await redis.aclose()
                await db.close()
        finally:
            await _execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
