"""Tests that start real processes or kill servers, all marked ``system`` (so that
``pytest -m "not system"`` leaves them out); the fault suite's servers and its report."""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.migrations import migrate
from tests.support.edge import create_key
from tests.system.fault_support import Faulty, Servers
from tests.system.report import REPORT, render
from tests.system.servers import own_postgres, own_redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REPORT_PATH = ROOT / "artifacts" / "fault-report.txt"
REDIS_DATABASES = 16
_databases = itertools.count(1)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-faults-")))
        # appendfsync always: every acknowledged change is on disk before the edge answers.
        redis_server = stack.enter_context(own_redis(tmp / "redis", "always"))
        yield Servers(stack.enter_context(own_postgres()), redis_server)


@pytest.fixture
async def faulty(servers: Servers, tmp_path: Path) -> AsyncIterator[Faulty]:
    """A migrated database of its own on the suite's Postgres, the suite's Redis flushed."""
    for server in (servers.postgres, servers.redis):
        if not server.running:
            server.start()  # a scenario that failed half-way may have left it down
    name = f"faults_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(servers.postgres.url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = urlunsplit(urlsplit(servers.postgres.url)._replace(path="/" + name))
    await migrate(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    # A Redis database per scenario: replicas a failed scenario could not stop (a test timeout)
    # then poll a database nobody writes to, not the next scenario's.
    number = next(_databases) % REDIS_DATABASES
    redis_url = f"{servers.redis.url.rpartition('/')[0]}/{number}"
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)
    await client.flushdb()
    _, key = await create_key(pool)
    try:
        yield Faulty(servers, url, redis_url, pool, client, key, tmp_path)
    finally:
        await client.aclose()
        await pool.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    text = render(REPORT)
    terminalreporter.write_sep("=", "fault report")
    terminalreporter.write_line(text)
    REPORT_PATH.parent.mkdir(exist_ok=True)
    REPORT_PATH.write_text(text + "\n")
    terminalreporter.write_line(f"(also in {REPORT_PATH.relative_to(ROOT)})")
