"""``cohortsync-worker`` as a process: configuration errors, probes, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from schemas.settings import Settings
from tests.support.process import ROOT, free_port, health_keys, service_env, spawn, stop
from tests.support.redis_keys import KEYS
from tests.support.status import samples, value
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker import accept, new_audience


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError:
        return 0, "not listening yet"


async def worker_command(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.main",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_help_lists_settings_and_bad_settings_exit_2() -> None:
    code, out, _ = await worker_command(dict(os.environ), "--help")
    assert code == 0
    assert "--check" in out
    assert "COHORTSYNC_RATE_LIMIT_PER_MINUTE" in out
    assert "COHORTSYNC_WORKER_METRICS_PORT" in out
    bad = {**os.environ, "COHORTSYNC_DISPATCH_WATERMARK": "lots"}
    code, _, err = await worker_command(bad)
    assert code == 2
    assert "COHORTSYNC_DISPATCH_WATERMARK" in err


async def test_worker_serves_probes_and_metrics_and_stops_on_sigterm(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db)
    await accept(redis, audience, [("add", f"p{i}") for i in range(30)])
    port = free_port()
    env = service_env(
        settings,
        COHORTSYNC_WORKER_METRICS_PORT=str(port),
        COHORTSYNC_RATE_LIMIT_PER_MINUTE="0",
        COHORTSYNC_LOG_LEVEL="WARNING",
    )
    with tempfile.TemporaryFile() as log:
        worker = await spawn("worker.main", env, log)
        health = ""
        try:
            while (
                (found := await health_keys(redis, KEYS, [worker.pid])) is None
                or not await redis.exists(health := found[0])
                or await db.fetchval(
                    "SELECT count(*) FROM memberships WHERE audience_id = $1", audience
                )
                < 30
            ):
                assert worker.returncode is None
                await asyncio.sleep(0.05)
            status, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/healthz")
            assert status == 200
            assert (await worker_command(env, "--check"))[0] == 0
            status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            scraped = samples(text)
            assert value(scraped, "cohortsync_changes_applied_total") == 30
            assert value(scraped, "cohortsync_workers_live") == 1
            assert value(scraped, "cohortsync_queue_depth", state="backlog") == 0
            assert value(scraped, "cohortsync_rate_limit_per_minute") == 0
            assert value(scraped, "cohortsync_limiter_wait_seconds_bucket", le="+Inf") == 30
        finally:
            code = await stop(worker)
        log.seek(0)
        errors = log.read().decode()
    assert code == 0, errors
    assert not await redis.exists(health)
    code, _, err_text = await worker_command(env, "--check")
    assert code == 1
    assert "healthz" in err_text


async def test_a_worker_started_while_postgres_is_away_waits_and_starts_by_itself(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db)
    await accept(redis, audience, [("add", f"p{i}") for i in range(20)])
    server = urlsplit(settings.database_url)
    proxy = TcpProxy(server.hostname or "127.0.0.1", server.port or 5432)
    await proxy.up()
    await proxy.down()  # the port is known and refuses connections
    port = free_port()
    env = service_env(
        settings.with_changes(
            database_url=urlunsplit(
                server._replace(netloc=f"{server.username}@127.0.0.1:{proxy.port}")
            )
        ),
        COHORTSYNC_WORKER_METRICS_PORT=str(port),
        COHORTSYNC_RATE_LIMIT_PER_MINUTE="0",
    )
    with tempfile.TemporaryFile() as log:
        worker = await spawn("worker.main", env, log)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = asyncio.get_running_loop().time() + 20
            while (status := await asyncio.to_thread(get, f"{base}/healthz"))[0] != 503:
                assert asyncio.get_running_loop().time() < deadline, status
                await asyncio.sleep(0.1)
            assert "cannot start" in status[1]
            await asyncio.sleep(3)  # a try or two more: still running, still saying why
            assert worker.returncode is None
            assert (await asyncio.to_thread(get, f"{base}/livez"))[0] == 200
            assert (await worker_command(env, "--check"))[0] == 1
            await proxy.up()
            while (
                await db.fetchval(
                    "SELECT count(*) FROM memberships WHERE audience_id = $1", audience
                )
                < 20
            ):
                assert worker.returncode is None
                await asyncio.sleep(0.1)
            assert (await asyncio.to_thread(get, f"{base}/healthz"))[0] == 200
        finally:
            code = await stop(worker)
            await proxy.down()
        log.seek(0)
        output = log.read().decode()
    assert code == 0, output
    assert "trying again in" in output
