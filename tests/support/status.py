"""What the metrics, status and dashboard tests share: a live in-process worker, changes posted
through the edge, waiting for a condition, reading an exposition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from arq.worker import Worker
from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import Settings
from tests.support.edge import Client
from tests.support.redis_keys import KEYS
from worker.app import create_worker, stop_worker
from worker.state import STATE_KEY

WAIT_S = 30.0

# (sample name, its labels sorted) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@asynccontextmanager
async def running_worker(
    settings: Settings, redis: aioredis.Redis, **overrides: Any
) -> AsyncIterator[Worker]:
    """A worker replica in this process, registered as live, stopped on exit."""
    worker = create_worker(settings, handle_signals=False, **overrides)
    run = asyncio.create_task(worker.async_run())

    async def registered() -> bool:
        if run.done():
            run.result()
            raise AssertionError("the worker stopped by itself")
        if STATE_KEY not in worker.ctx:
            return False
        return await redis.zscore(KEYS.workers, worker.health_check_key) is not None

    try:
        await wait_until(registered, "the worker to start")
        yield worker
    finally:
        await stop_worker(worker, run)


async def post_changes(
    client: Client, changes: list[tuple[int, str, str]], expect: int = 204
) -> None:
    """POST /v2/customer_audiences with ``(audience id, action, profile id)`` changes."""
    body = {
        "data": [
            {"audienceId": a, "action": action, "profileIntegrationId": p}
            for a, action, p in changes
        ]
    }
    response = await client.post("/v2/customer_audiences", json=body)
    assert response.status == expect, await response.text()


def samples(text: str) -> Samples:
    """An exposition parsed by prometheus_client: (sample name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(parsed: Samples, name: str, **labels: str) -> float | None:
    return parsed.get((name, tuple(sorted(labels.items()))))
