"""The edge's aiohttp application: middlewares, routes, and the pools it opens and closes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from ingest import (
    amplitude,
    audiences,
    auth,
    cdp,
    connections,
    dashboard,
    docs,
    health,
    logs,
    memberships,
    metrics,
    openapi,
    profiles,
    readapi,
    redisclient,
    status,
)
from ingest.auth import auth_middleware
from ingest.errors import ERROR_RENDERERS, ErrorRenderer, error_middleware
from ingest.state import API_KEYS, DB, LIVE_AUDIENCES, REDIS, SCRIPTS, SETTINGS, Scripts, TtlCache
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
    app[SCRIPTS] = Scripts(client)
    try:
        yield
    finally:
        await client.aclose()
        await pool.close()


# What the public listener serves: the APIs, their description and the probes.
PUBLIC_ROUTES = (
    health, auth, audiences, memberships, readapi, profiles, cdp, amplitude, status, openapi, docs
)  # fmt: skip
# What the operations port serves (COHORTSYNC_OPS_PORT): the probes too, and /v1/status, which
# the dashboard polls from its own origin.
OPS_ROUTES = (health, status, metrics, dashboard)


def create_app(settings: Settings) -> web.Application:
    """The edge: Integration API audience endpoints, read API, status and probes — and metrics
    and the dashboard unless they have their own port (``create_ops_app``) — behind auth and
    the error middleware. Pools open on startup and close on cleanup."""
    app = _application(settings, metrics.EdgeMetrics(), "public")
    app.cleanup_ctx.append(_pools)
    for module in PUBLIC_ROUTES if settings.ops_port else (*PUBLIC_ROUTES, metrics, dashboard):
        app.router.add_routes(module.routes)
    return app


def create_ops_app(settings: Settings, public: web.Application) -> web.Application:
    """The operations port's application: probes, metrics, the dashboard and status, on the
    pools and metrics of ``public``, which must be started first."""
    app = _application(settings, public[metrics.METRICS], "ops")

    async def borrow_pools(app: web.Application) -> AsyncIterator[None]:
        shared: tuple[web.AppKey[Any], ...] = (DB, REDIS, SCRIPTS)
        for key in shared:
            app[key] = public[key]
        yield

    app.cleanup_ctx.append(borrow_pools)
    for module in OPS_ROUTES:
        app.router.add_routes(module.routes)
    return app


def _application(
    settings: Settings, edge_metrics: metrics.EdgeMetrics, listener: str
) -> web.Application:
    # Logging and metrics see the final status of every request; inside them the connection
    # bounds, then the error middleware, so a refused key is answered in the contract's shape.
    app = web.Application(
        middlewares=[
            logs.request_log_middleware,
            connections.connection_middleware,
            error_middleware,
            auth_middleware,
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
    renderers: list[tuple[str, ErrorRenderer]] = [(cdp.PREFIX, cdp.render_error)]
    app[ERROR_RENDERERS] = renderers
    return app
