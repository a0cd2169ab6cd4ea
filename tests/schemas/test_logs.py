"""Log lines: one JSON object per event (request, job, start/stop) on stderr, human-readable on a
terminal, COHORTSYNC_LOG_LEVEL respected, and never a key."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from ingest.bodies import MAX_REQUEST_LINE_BYTES
from ingest.state import DB
from schemas.apikeys import new_key
from schemas.logs import HumanFormatter, JsonFormatter, configure
from schemas.settings import Settings
from tests.support.edge import Client, auth, create_key
from tests.support.process import free_port, json_lines, service_env, spawn, stop, wait_ready
from tests.support.redis_keys import KEYS
from tests.support.status import wait_until
from tests.support.worker import accept, new_audience


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    return logging.getLogger("cohortsync.test").makeRecord(
        "cohortsync.test", logging.INFO, __file__, 1, message, args, None, extra=extra
    )


def test_a_json_line_carries_the_event_fields() -> None:
    line = json.loads(
        JsonFormatter().format(record("GET %s %d", "/v1/status", 200, event="request", status=200))
    )
    assert line["level"] == "INFO"
    assert line["logger"] == "cohortsync.test"
    assert line["msg"] == "GET /v1/status 200"
    assert line["event"] == "request"
    assert line["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])


def test_keys_never_reach_a_line() -> None:
    key = new_key()
    try:
        raise ValueError(f"bad header ApiKey-v1 {key}")
    except ValueError:
        failed = record("refused Authorization: ApiKey-v1 %s", key, header=f"ApiKey-v1 {key}")
        failed.exc_info = __import__("sys").exc_info()
    for formatter in (JsonFormatter(), HumanFormatter()):
        text = formatter.format(failed)
        assert key not in text
        assert key[:20] not in text
        assert "[redacted]" in text
    json.loads(JsonFormatter().format(failed))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_a_terminal_gets_human_lines_and_the_level_holds() -> None:
    terminal = Terminal()
    configure(logging.WARNING, terminal)
    log = logging.getLogger("cohortsync.http")
    log.info("hidden", extra={"event": "request"})
    log.warning("GET %s %d", "/v1/status", 503, extra={"event": "request", "route": "/v1/status"})
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARNING cohortsync.http GET /v1/status 503  route=/v1/status" in lines[0]
    assert not lines[0].startswith("{")

    piped = io.StringIO()
    configure(logging.INFO, piped)
    log.info("shown", extra={"event": "request"})
    assert json.loads(piped.getvalue())["msg"] == "shown"


async def test_edge_logs_each_request_once_with_its_id_and_never_a_key(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    _, key = await create_key(db)
    wrong = new_key()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        edge = await spawn(
            "ingest.main", service_env(settings, COHORTSYNC_HTTP_PORT=str(port)), log
        )
        try:
            await wait_ready(url, edge)
            ids = {}
            async with aiohttp.ClientSession() as http:
                calls: list[tuple[str, str, dict[str, str]]] = [
                    ("GET", "/v1/audiences", {**auth(key), "X-Request-Id": "trace-123"}),
                    ("POST", "/v2/customer_audiences", auth(wrong)),
                    ("GET", "/v1/customer_profiles/secret-profile-42/audiences", auth(key)),
                    ("GET", "/v1/status", {**auth(key), "X-Request-Id": "has spaces {}"}),
                    ("GET", "/no/such/page", {}),
                ]
                for method, path, headers in calls:
                    async with http.request(method, url + path, headers=headers) as response:
                        ids[path] = (response.status, response.headers["X-Request-Id"])
        finally:
            code = await stop(edge)
        lines = json_lines(log)
        log.seek(0)
        text = log.read().decode()
    assert code == 0
    for secret in (key, wrong, "ApiKey-v1", "secret-profile-42"):
        assert secret not in text
    assert ids["/v1/audiences"] == (200, "trace-123")
    assert ids["/v2/customer_audiences"][0] == 401
    assert re.fullmatch(r"[0-9a-f]{32}", ids["/v1/status"][1])

    requests = [line for line in lines if line.get("event") == "request"]
    # /readyz, polled while the edge started, is a probe: DEBUG only.
    assert [(r["method"], r["route"], r["status"]) for r in requests] == [
        ("GET", "/v1/audiences", 200),
        ("POST", "/v2/customer_audiences", 401),
        ("GET", "/v1/customer_profiles/{integrationId}/audiences", 200),
        ("GET", "/v1/status", 200),
        ("GET", "unmatched", 404),
    ]
    assert [r["request_id"] for r in requests] == [i for _, i in ids.values()]
    assert all(r["duration_ms"] >= 0 and r["logger"] == "cohortsync.http" for r in requests)
    events = [line.get("event") for line in lines]
    assert events[0] == "start"
    assert f"edge starting on {url}" in lines[0]["msg"]
    assert events[-2:] == ["stopping", "stop"]


async def test_log_level_warning_keeps_requests_out(settings: Settings, db: asyncpg.Pool) -> None:
    _, key = await create_key(db)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(settings, COHORTSYNC_HTTP_PORT=str(port), COHORTSYNC_LOG_LEVEL="warning")
    with tempfile.TemporaryFile() as log:
        edge = await spawn("ingest.main", env, log)
        try:
            await wait_ready(url, edge)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{url}/v1/audiences", headers=auth(key)) as response,
            ):
                assert response.status == 200
        finally:
            assert await stop(edge) == 0
        assert json_lines(log) == []


async def test_worker_logs_start_each_job_and_stop(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db)
    versions = await accept(redis, audience, [("add", f"p{i}") for i in range(5)])
    env = service_env(settings, COHORTSYNC_RATE_LIMIT_PER_MINUTE="0")
    with tempfile.TemporaryFile() as log:
        worker = await spawn("worker.main", env, log)
        try:

            async def applied() -> bool:
                assert worker.returncode is None, "the worker exited"
                count: int = await db.fetchval("SELECT count(*) FROM memberships")
                return count == 5

            await wait_until(applied, "5 changes applied")
        finally:
            code = await stop(worker)
        lines = json_lines(log)
    assert code == 0
    jobs = [line for line in lines if line.get("event") == "job"]
    assert sorted((j["job_id"], j["audience_id"], j["outcome"]) for j in jobs) == sorted(
        (KEYS.job_id(audience, v), audience, "applied") for v in versions
    )
    assert all(j["job_try"] == 1 and j["latency_s"] >= 0 for j in jobs)
    events = [line["event"] for line in lines if line.get("logger") == "cohortsync.worker"]
    assert events == ["start", "stopping", "stop"]
    assert lines[0]["event"] == "start"
    assert lines[-1]["event"] == "stop"


async def test_a_failing_request_is_logged_by_route_never_by_path(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.app is not None
    await client.app[DB].close()  # every query now fails: a 500, logged with its traceback
    with caplog.at_level(logging.INFO):
        response = await client.get("/v1/customer_profiles/secret-profile-42/audiences")
    assert response.status == 500
    # The test server keeps aiohttp's access log, which cohortsync-edge turns off.
    ours = [logging.Formatter().format(r) for r in caplog.records if r.name != "aiohttp.access"]
    assert any("GET /v1/customer_profiles/{integrationId}/audiences" in line for line in ours)
    assert any("InterfaceError: pool is closed" in line for line in ours)
    assert not [line for line in ours if "secret-profile-42" in line]


async def test_an_unparsable_request_is_logged_without_its_path(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Past MAX_REQUEST_LINE_BYTES: aiohttp refuses it before any route, and logs it.
    path = "/v1/customer_profiles/secret-profile-42" + "x" * MAX_REQUEST_LINE_BYTES
    reader, writer = await asyncio.open_connection(client.host, client.port)
    with caplog.at_level(logging.INFO):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()

        async def logged() -> bool:
            return any(r.name == "aiohttp.server" for r in caplog.records)

        await wait_until(logged, "aiohttp's log line")
    assert status_line.split()[1] == b"400"
    lines = [logging.Formatter().format(r) for r in caplog.records]
    assert "unparsable HTTP request refused: LineTooLong" in lines
    assert not [line for line in lines if "secret-profile-42" in line]
