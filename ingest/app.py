"""The edge's aiohttp application: middlewares, routes, and the pools it opens and closes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from ingest import (
    amplitude,
    audiences,
    auth,
    cdp,
    dashboard,
    health,
    logs,
    memberships,
    metrics,
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


def create_app(settings: Settings) -> web.Application:
    """The edge: Integration API audience endpoints, read API, status, probes, metrics and the
    dashboard, behind auth and the error middleware. Pools open on startup and close on
    cleanup."""
    # Logging and metrics see the final status of every request; inside them the error
    # middleware, so a refused key is answered in the contract's shape too.
    app = web.Application(
        middlewares=[
            logs.request_log_middleware,
            error_middleware,
            auth_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[metrics.METRICS] = metrics.EdgeMetrics()
    app.on_response_prepare.append(logs.echo_request_id)
    app[API_KEYS] = TtlCache()
    app[LIVE_AUDIENCES] = TtlCache()
    renderers: list[tuple[str, ErrorRenderer]] = [(cdp.PREFIX, cdp.render_error)]
    app[ERROR_RENDERERS] = renderers
    app.cleanup_ctx.append(_pools)
    for module in (
        health,
        auth,
        audiences,
        memberships,
        readapi,
        profiles,
        cdp,
        amplitude,
        status,
        metrics,
        dashboard,
    ):
        app.router.add_routes(module.routes)
    return app
