"""Log lines of real edge and worker processes: one JSON object per event on stderr, the level
respected, never a key."""

from __future__ import annotations

import re
import tempfile

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from schemas.apikeys import new_key
from schemas.settings import Settings
from tests.support.edge import auth, create_key
from tests.support.process import free_port, json_lines, service_env, spawn, stop, wait_ready
from tests.support.redis_keys import KEYS
from tests.support.status import wait_until
from tests.support.worker import accept, new_audience


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
