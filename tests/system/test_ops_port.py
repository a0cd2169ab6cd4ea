"""COHORTSYNC_OPS_PORT: /metrics and /dashboard on a port of their own, off the public listener."""

from __future__ import annotations

import aiohttp

from schemas.settings import Settings
from tests.support.edge import auth
from tests.support.process import free_port
from tests.system.connection_support import edge_process


async def status_of(http: aiohttp.ClientSession, url: str, key: str | None = None) -> int:
    async with http.get(url, headers=auth(key) if key else None) as response:
        await response.read()
        return response.status


async def test_metrics_and_dashboard_leave_the_public_port(settings: Settings, key: str) -> None:
    ops_port = free_port()
    async with (
        edge_process(settings, COHORTSYNC_OPS_PORT=str(ops_port)) as edge,
        aiohttp.ClientSession() as http,
    ):
        public, ops = edge.url, f"http://127.0.0.1:{ops_port}"
        # The public listener: the APIs and the probes, no metrics (they list audience ids).
        async with http.get(f"{public}/metrics") as response:
            assert response.status == 404
            assert (await response.json())["StatusCode"] == 404
        assert await status_of(http, f"{public}/dashboard") == 404
        assert await status_of(http, f"{public}/healthz") == 200
        assert await status_of(http, f"{public}/readyz") == 200
        assert await status_of(http, f"{public}/v1/status", key) == 200
        assert await status_of(http, f"{public}/v2/authping", key) == 204
        # The ops port: probes, metrics, the dashboard and the status it polls; no APIs.
        assert await status_of(http, f"{ops}/healthz") == 200
        assert await status_of(http, f"{ops}/readyz") == 200
        assert await status_of(http, f"{ops}/v1/status", key) == 200
        assert await status_of(http, f"{ops}/v1/status") == 401
        assert await status_of(http, f"{ops}/v2/authping", key) == 404
        async with http.get(f"{ops}/dashboard") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
        async with http.get(f"{ops}/metrics") as response:
            assert response.status == 200
            metrics = await response.text()
    # One registry for both listeners: the public port's requests are counted on the ops port.
    assert (
        'cohortsync_http_requests_total{method="GET",route="/v2/authping",status="204"} 1.0'
        in metrics
    )
    assert 'cohortsync_http_connections_open{listener="ops"} 1.0' in metrics
    assert "cohortsync_queue_depth" in metrics
