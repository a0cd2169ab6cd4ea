"""``make run`` end to end: banner, a member through edge and workers, clean Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import tempfile
from asyncio.subprocess import Process
from pathlib import Path
from typing import IO

import aiohttp
import pytest
import redis.asyncio as aioredis

from deploy import embedded
from tests.support.process import environment

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds child processes through /proc"
)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _banner(stdout: asyncio.StreamReader) -> str:
    """Everything the runner printed up to its last banner line (the read-API curl)."""
    lines = []
    while line := (await stdout.readline()).decode():
        lines.append(line)
        if line.startswith("curl -sS http"):
            break
    return "".join(lines)


def _env(database_url: str, redis_url: str, port: int) -> dict[str, str]:
    return environment(
        database_url=database_url, redis_url=redis_url, http_host="127.0.0.1", http_port=port
    )


async def _start(env: dict[str, str], data_dir: Path, logs: IO[bytes]) -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.local",
        "--data-dir",
        str(data_dir),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=logs,
    )


async def test_run_serves_a_member_and_stops_on_ctrl_c(
    database_url: str, redis_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    env = _env(database_url, redis_url, embedded.free_port())
    with tempfile.TemporaryFile() as logs:
        proc = await _start(env, tmp_path, logs)
        try:
            assert proc.stdout is not None
            banner = await _banner(proc.stdout)
            logs.seek(0)
            assert "API key:" in banner, logs.read().decode()
            edge = re.search(r"edge:\s+(http://\S+)", banner)
            key = re.search(r"API key:\s+(\S+)", banner)
            assert edge is not None
            assert key is not None
            children = _children(proc.pid)
            assert len(children) == 3  # the edge and two workers

            url = edge.group(1)
            auth = {"Authorization": f"ApiKey-v1 {key.group(1)}"}
            async with aiohttp.ClientSession(headers=auth) as http:
                async with http.post(f"{url}/v2/audiences", json={"name": "Local run"}) as r:
                    assert r.status == 201, await r.text()
                    audience_id = (await r.json())["id"]
                change = {"action": "add", "profileIntegrationId": "R195412"}
                body = {"data": [change | {"audienceId": audience_id}]}
                async with http.post(f"{url}/v2/customer_audiences", json=body) as r:
                    assert r.status == 204, await r.text()
                # A worker applies the change at its own pace; the suite's timeout bounds this.
                members: list[str] = []
                while "R195412" not in members:
                    await asyncio.sleep(0.1)
                    async with http.get(f"{url}/v1/audiences/{audience_id}/memberships") as r:
                        assert r.status == 200, await r.text()
                        members = [m["profileIntegrationId"] for m in (await r.json())["data"]]

            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
            assert [pid for pid in children if _running(pid)] == []
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                await proc.wait()


async def test_a_dying_worker_stops_everything_and_is_named(
    database_url: str, redis_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    env = _env(database_url, redis_url, embedded.free_port())
    with tempfile.TemporaryFile() as logs:
        proc = await _start(env, tmp_path, logs)
        try:
            assert proc.stdout is not None
            assert "API key:" in await _banner(proc.stdout)
            children = _children(proc.pid)
            workers = [pid for pid in children if b"worker.main" in _cmdline(pid)]
            assert len(workers) == 2
            os.kill(workers[0], signal.SIGKILL)
            assert await proc.wait() == 1
            assert [pid for pid in children if _running(pid)] == []
            logs.seek(0)
            assert re.search(r"worker-[12] exited unexpectedly with code -9", logs.read().decode())
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                await proc.wait()


async def test_busy_port_is_reported(database_url: str, redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken, tempfile.TemporaryFile() as logs:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await _start(_env(database_url, redis_url, port), tmp_path, logs)
        assert await proc.wait() == 1
        logs.seek(0)
        assert f"COHORTSYNC_HTTP_PORT: port {port} on 127.0.0.1 is already in use" in (
            logs.read().decode()
        )
