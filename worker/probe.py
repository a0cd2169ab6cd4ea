"""A worker replica's own HTTP port: ``/healthz`` for probes, ``/metrics`` for Prometheus."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

from aiohttp import web

from schemas.settings import Settings
from worker.errors import describe

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0


class Probe:
    """Serves ``/healthz`` (200 while ``health()`` finds no problem, else 503 with it),
    ``/livez`` (200 while ``running()``: for a liveness probe, which must not restart a worker
    that is waiting out an outage) and ``/metrics`` (``metrics()``'s text)."""

    def __init__(
        self,
        health: Callable[[], str | None],
        metrics: Callable[[], Awaitable[str]],
        running: Callable[[], bool] = lambda: True,
    ) -> None:
        self._health = health
        self._running = running
        self._metrics = metrics
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/metrics", self._serve_metrics)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, host: str, port: int) -> bool:
        """Listen; False (and a warning) when the port is taken, so the worker still runs."""
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError as e:
            logger.warning("no /healthz or /metrics on %s:%d: %s", host, port, describe(e))
            return False
        return True

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        problem = self._health()
        if problem is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"unhealthy: {problem}\n")

    async def _livez(self, request: web.Request) -> web.Response:
        if self._running():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="worker stopped\n")

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        try:
            text = await self._metrics()
        except Exception as e:
            logger.warning("metrics unavailable: %s", describe(e))
            return web.Response(status=503, text="metrics unavailable\n")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


def check(settings: Settings) -> str | None:
    """``cohortsync-worker --check``: None if this host's worker answers /healthz, else why not."""
    if not settings.worker_metrics_port:
        return "COHORTSYNC_WORKER_METRICS_PORT is 0: the worker serves no /healthz"
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"http://{host}:{settings.worker_metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT_S) as response:
            status: int = response.status
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError as e:
        return f"{url}: {describe(e)}"
    return None if status == 200 else f"{url}: HTTP {status}"
