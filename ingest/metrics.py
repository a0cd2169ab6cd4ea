"""The edge's Prometheus metrics: its own request and acceptance counters, and the queue's gauges
read from Redis at each scrape (every exporting process reports the same queue values, so
dashboards take their ``max``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from core.metrics import exposition, queue_collector
from ingest.connections import Connections
from ingest.health import check_dependencies
from ingest.state import SCRIPTS, SETTINGS, State

log = logging.getLogger(__name__)

# Edge requests take milliseconds; a slow Postgres or a full event loop shows up in the tail.
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A scrape that cannot read Redis in this long reports the edge's own metrics only.
SCRAPE_TIMEOUT_S = 2.0
# A request whose client went away before the answer (nginx's convention).
CLIENT_CLOSED = 499


class EdgeMetrics:
    """This process's own metrics, in a registry of its own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cohortsync_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cohortsync_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.accepted = Counter(
            "cohortsync_changes_accepted",
            "Membership changes accepted into the backlog.",
            registry=self.registry,
        )
        # Each listener's connection bounds (ingest.connections), by name: public, ops.
        self.listeners: dict[str, Connections] = {}
        self.registry.register(ConnectionCollector(self.listeners))


class ConnectionCollector(Collector):
    """Open connections and what the bounds refused or closed, per listener."""

    def __init__(self, listeners: dict[str, Connections]) -> None:
        self._listeners = listeners

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily(
            "cohortsync_http_connections_open", "Open HTTP connections.", labels=["listener"]
        )
        timeouts = CounterMetricFamily(
            "cohortsync_http_read_timeouts",
            "Connections closed because a request did not arrive whole within "
            "COHORTSYNC_REQUEST_READ_TIMEOUT_S.",
            labels=["listener"],
        )
        refused = CounterMetricFamily(
            "cohortsync_http_connections_refused",
            "Connections answered 503 and closed past COHORTSYNC_MAX_CONNECTIONS.",
            labels=["listener"],
        )
        for name, bounds in self._listeners.items():
            open_now.add_metric([name], bounds.open)
            timeouts.add_metric([name], bounds.read_timeouts)
            refused.add_metric([name], bounds.refused)
        yield open_now
        yield timeouts
        yield refused


METRICS = web.AppKey("metrics", EdgeMetrics)


def count_accepted(app: State, changes: int) -> None:
    """Count ``changes`` accepted into Redis by this edge."""
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.accepted.inc(changes)


def count_request(request: web.Request, route: str, status: int, duration_s: float) -> None:
    """Count and time an answered request by route template, method and final status (the
    request log middleware calls this as it logs the request)."""
    metrics = request.app[METRICS]
    metrics.requests.labels(route, request.method, str(status)).inc()
    metrics.duration.labels(route, request.method).observe(duration_s)


class DependencyCollector(Collector):
    """``cohortsync_dependency_up``: what /readyz checks, one series per dependency, so an alert
    can name the one an edge cannot reach."""

    def __init__(self, checks: dict[str, str]) -> None:
        self._checks = checks

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "cohortsync_dependency_up",
            "1 when this edge reaches the dependency (as /readyz checks it), else 0.",
            labels=["dependency"],
        )
        for dependency, state in sorted(self._checks.items()):
            up.add_metric([dependency], 1 if state == "ok" else 0)
        yield up


async def serve_metrics(request: web.Request) -> web.Response:
    app = request.app
    sources: list[Collector] = [
        app[METRICS].registry,
        DependencyCollector(await check_dependencies(app)),
    ]
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT_S):
            queue = await queue_collector(app[SCRIPTS], app[SETTINGS])
    except Exception as e:
        # The edge's own metrics still matter (they show the 503s while Redis is down).
        log.warning("queue gauges unavailable: %s", type(e).__name__)
    else:
        sources.append(queue)
    return web.Response(body=exposition(*sources), headers={"Content-Type": CONTENT_TYPE_LATEST})
