"""A worker survives a Redis that refuses writes (out of memory) instead of exiting: it says so
in its health and recovers when Redis takes writes again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from deploy import embedded
from schemas.settings import Settings
from tests.support.status import running_worker, wait_until
from worker.app import ChangeWorker


async def test_a_redis_out_of_memory_is_waited_out(
    settings: Settings, db: Any, tmp_path: Path
) -> None:
    with embedded.redis(tmp_path / "redis") as url:
        own = settings.with_changes(redis_url=url)
        client = aioredis.Redis.from_url(url)
        try:
            async with running_worker(own, client) as started:
                assert isinstance(started, ChangeWorker)
                worker = started
                await client.config_set("maxmemory", 1)  # every write refused: OOM

                def problem() -> str:
                    return worker.health_problem() or ""

                async def unhealthy() -> bool:
                    return "Redis failing" in problem()

                await wait_until(unhealthy, "the worker to report Redis")
                await asyncio.sleep(2)  # Redis refusing writes a while: the point
                assert "OutOfMemoryError" in problem()
                assert not worker.loop_ended
                await client.config_set("maxmemory", 0)

                async def healthy() -> bool:
                    return worker.health_problem() is None

                await wait_until(healthy, "the worker to recover")
        finally:
            await client.aclose()
