"""The edge and workers as real processes, the way operators run them, for log and shutdown tests.

Their stderr goes to a file: a chatty process never blocks on a full pipe.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any

import aiohttp

from schemas.keys import Keys
from schemas.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def environment(**settings: str | int) -> dict[str, str]:
    """This process's environment without the ``COHORTSYNC_*`` variables it has, with
    ``settings`` instead (``http_port=8080`` is ``COHORTSYNC_HTTP_PORT=8080``): what every
    process a test starts runs with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    return env | {f"{PREFIX}{name.upper()}": str(value) for name, value in settings.items()}


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """``environment`` pointed at the test services, with no worker metrics port, plus
    ``extra`` variables by their full names."""
    env = environment(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        http_host="127.0.0.1",
        worker_metrics_port=0,
    )
    return env | extra


async def spawn(module: str, env: dict[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
    """``python -m module`` (what the console scripts run), its stderr into ``log``."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )


async def wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    """Until the edge at ``url`` answers /readyz with 200."""
    async with asyncio.timeout(READY_TIMEOUT_S), aiohttp.ClientSession() as http:
        while True:
            assert proc.returncode is None, "the edge exited before it was ready"
            try:
                async with http.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def stop(proc: asyncio.subprocess.Process, timeout_s: float = 30.0) -> int:
    """SIGTERM, then the exit code (SIGKILL and a failure past ``timeout_s``)."""
    if proc.returncode is None:
        proc.terminate()
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the process did not stop within {timeout_s:g} s") from None


def json_lines(log: IO[bytes]) -> list[dict[str, Any]]:
    """Every line a process wrote to ``log``, each of which must be one JSON object."""
    log.seek(0)
    lines = log.read().decode().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def health_keys(redis: Any, keys: Keys, pids: list[int]) -> list[str] | None:
    """The health keys of the worker replicas with these pids on this host, once every one
    wrote its key (``worker.app.replica_name`` ends in a token of its own); else None."""
    found = []
    for pid in pids:
        prefix = keys.health_check(f"{socket.gethostname()}:{pid}:")
        matches = [k.decode() async for k in redis.scan_iter(match=prefix + "*")]
        if not matches:
            return None
        found.append(matches[0])
    return found
