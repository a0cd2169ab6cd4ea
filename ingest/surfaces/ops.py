"""Operations, on the root application and without a key: the probes, the OpenAPI document and its
page, and the metrics and the dashboard (on the operations port when it is set)."""

from __future__ import annotations

from aiohttp import web

from ingest import dashboard, docs, health, metrics, openapi
from ingest.bodies import json_response
from ingest.state import SETTINGS

probes = web.RouteTableDef()
descriptions = web.RouteTableDef()
monitoring = web.RouteTableDef()


@probes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@probes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 when Redis and Postgres answer and every migration is applied; 503 naming what is not."""
    checks = await health.check_dependencies(request.app)
    ready = all(state == "ok" for state in checks.values())
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


@descriptions.get(openapi.PATH)
async def openapi_document(request: web.Request) -> web.Response:
    """Describes, reveals no data: served without a key."""
    body = openapi.encoded(request.app[SETTINGS])
    return web.Response(body=body, content_type="application/json")


@descriptions.get("/docs")
async def docs_page(request: web.Request) -> web.Response:
    return dashboard.html_response(docs.page(request.app[SETTINGS]))


@monitoring.get("/dashboard")
async def dashboard_page(request: web.Request) -> web.Response:
    return dashboard.html_response(dashboard.page())


# metrics.py keeps its handler beside the collectors it renders.
monitoring.get("/metrics")(metrics.serve_metrics)
