"""``cohortsync-edge`` as an operator runs it: help, bad configuration, start and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import pytest

from schemas.settings import Settings
from tests.support.process import free_port


async def run_edge(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingest.main",
        *args,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_help_names_the_variables() -> None:
    proc = await run_edge("--help", env={})
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode()
    for name in ("COHORTSYNC_DATABASE_URL", "COHORTSYNC_REDIS_URL", "COHORTSYNC_HTTP_PORT"):
        assert name in text


@pytest.mark.parametrize(
    ("name", "value"), [("COHORTSYNC_HTTP_PORT", "eighty"), ("COHORTSYNC_LOG_LEVEL", "LOUD")]
)
async def test_bad_configuration_exits_2_naming_the_variable(name: str, value: str) -> None:
    proc = await run_edge(env={name: value})
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert name in err.decode()


async def test_serves_until_sigterm(settings: Settings) -> None:
    port = free_port()
    env = {
        "COHORTSYNC_DATABASE_URL": settings.database_url,
        "COHORTSYNC_REDIS_URL": settings.redis_url,
        "COHORTSYNC_HTTP_HOST": "127.0.0.1",
        "COHORTSYNC_HTTP_PORT": str(port),
    }
    proc = await run_edge(env=env)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        assert resp.status == 200, await resp.text()
                        break
                except aiohttp.ClientConnectionError:
                    assert proc.returncode is None
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the edge never answered")
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    log = err.decode()
    assert f"edge starting on http://127.0.0.1:{port}" in log
    assert settings.database_url not in log
