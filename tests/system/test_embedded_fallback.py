"""Where no Postgres or Redis answers, the suite and ``make run`` use embedded servers."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from deploy import embedded
from tests.support.process import environment

ROOT = Path(__file__).resolve().parents[2]


async def test_embedded_servers_start_and_answer(tmp_path: Path) -> None:
    with embedded.postgres(tmp_path / "pg") as pg_url, embedded.redis(tmp_path / "redis") as r_url:
        conn = await asyncpg.connect(pg_url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
        client = aioredis.Redis.from_url(r_url)
        try:
            assert await client.ping() is True
        finally:
            await client.aclose()
    redis_port = urlsplit(r_url).port
    assert redis_port is not None
    # Both stopped on exit.
    assert not embedded.reachable("127.0.0.1", redis_port)
    assert not (tmp_path / "pg" / "postmaster.pid").exists()


async def test_embedded_redis_keeps_its_data_with_appendonly(tmp_path: Path) -> None:
    for expected in (None, b"kept"):
        with embedded.redis(tmp_path, appendonly=True) as url:
            client = aioredis.Redis.from_url(url)
            try:
                assert await client.get("probe") == expected
                await client.set("probe", "kept")
            finally:
                await client.aclose()


def test_embedded_redis_refuses_a_port_someone_else_holds(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(embedded.EmbeddedError, match=str(port)), embedded.redis(tmp_path, port):
            pass


async def test_suite_falls_back_to_embedded_servers() -> None:
    env = environment()
    # Port 1 answers nothing, as on a machine that runs neither server.
    env["COHORTSYNC_TEST_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/postgres"
    env["COHORTSYNC_TEST_REDIS_URL"] = "redis://127.0.0.1:1/0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/core/test_foundation.py",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert " passed" in out
    assert "skipped" not in out
