"""The edge's aiohttp application: what every request passes through, the surfaces it serves, and
the pools it opens and closes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from core.scripts import Scripts
from ingest import connections, logs, metrics, redisclient
from ingest.errors import error_middleware
from ingest.state import (
    API_KEYS,
    DB,
    LIVE_AUDIENCES,
    REDIS,
    SCRIPTS,
    SETTINGS,
    TENANT_HOSTNAMES,
    TtlCache,
)
from ingest.surfaces import amplitude, cdp, integration, ops, read
from schemas.keys import Keys
from schemas.settings import Settings

# Edge requests are short; a few connections per process serve hundreds of requests a second.
DB_POOL_MIN = 1
DB_POOL_MAX = 10


async def _pools(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=DB_POOL_MIN, max_size=DB_POOL_MAX
    )
    client = redisclient.connect(settings.redis_url)
    app[DB] = pool
    app[REDIS] = client
    app[SCRIPTS] = Scripts(client, Keys(settings.queue_name))
    app[SCRIPTS].backlogs.wait_for_replicas(
        settings.redis_ack_replicas, settings.redis_ack_timeout_ms
    )
    try:
        yield
    finally:
        await client.aclose()
        await pool.close()


def create_app(settings: Settings) -> web.Application:
    """The edge: the Integration API, the CDP API, the Amplitude webhook and the read API, each a
    sub-application with its own key scopes and error shape, beside the probes and the API's
    description — and metrics and the dashboard unless they have their own port
    (``create_ops_app``). Pools open on startup and close on cleanup."""
    app = _root(settings, metrics.EdgeMetrics(), "public")
    app.cleanup_ctx.append(_pools)
    app.router.add_routes(ops.probes)
    app.router.add_routes(ops.descriptions)
    if not settings.ops_port:
        app.router.add_routes(ops.monitoring)
    app.add_subapp("/v2/authping", integration.create_ping_app())
    app.add_subapp("/v2", integration.create_app())
    app.add_subapp("/cdp", cdp.create_app())
    app.add_subapp("/amplitude", amplitude.create_app())
    app.add_subapp("/v1", read.create_app())
    return app


def create_ops_app(settings: Settings, public: web.Application) -> web.Application:
    """The operations port's application: probes, metrics, the dashboard and the ``/v1/status``
    it polls, on the pools and metrics of ``public``, which must be started first."""
    app = _root(settings, public[metrics.METRICS], "ops")

    async def borrow_pools(app: web.Application) -> AsyncIterator[None]:
        shared: tuple[web.AppKey[Any], ...] = (DB, REDIS, SCRIPTS)
        for key in shared:
            app[key] = public[key]
        yield

    app.cleanup_ctx.append(borrow_pools)
    app.router.add_routes(ops.probes)
    app.router.add_routes(ops.monitoring)
    app.add_subapp("/v1", read.create_app(status_only=True))
    return app


def _root(settings: Settings, edge_metrics: metrics.EdgeMetrics, listener: str) -> web.Application:
    # Every request, whichever surface it is for: logging and metrics see its final status;
    # inside them the connection bounds, then the error middleware, which answers in the shape
    # of the surface the request was routed to (errors.ERROR_RENDERER).
    app = web.Application(
        middlewares=[
            logs.request_log_middleware,
            connections.connection_middleware,
            error_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[metrics.METRICS] = edge_metrics
    bounds = connections.Connections(
        max_connections=settings.max_connections, read_timeout_s=settings.request_read_timeout_s
    )
    app[connections.CONNECTIONS] = bounds
    edge_metrics.listeners[listener] = bounds
    app.on_response_prepare.append(logs.echo_request_id)
    app[API_KEYS] = TtlCache()
    app[LIVE_AUDIENCES] = TtlCache()
    app[TENANT_HOSTNAMES] = TtlCache()
    return app
