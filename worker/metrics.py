"""A worker replica's Prometheus metrics: its own counters and histograms, plus the queue's
gauges read from Redis at each scrape (core.metrics, as the edge exports them)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from core.metrics import exposition, queue_collector
from core.scripts import Scripts
from schemas.settings import Settings

# From acceptance at the edge to committed in Postgres: seconds when idle, hours behind a backlog.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
# A job's wait for its rate-limit slot.
WAIT_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Reported from the start, at 0, so a rate() over them never starts from a missing series.
DROP_REASONS = ("stale", "dead_letter")


class WorkerMetrics:
    """What this replica did since it started, in a registry of its own (one per replica)."""

    def __init__(self) -> None:
        self.applied = 0
        # reason -> changes: "stale" (older than the stored version or a clear, or the audience
        # is deleted) or "dead_letter" (failed permanently, kept in the dead letters).
        self.dropped: Counter[str] = Counter()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(OutcomeCollector(self))
        self.job_latency = Histogram(
            "cohortsync_job_latency_seconds",
            "From acceptance to applied.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.limiter_wait = Histogram(
            "cohortsync_limiter_wait_seconds",
            "From acceptance to the job's rate slot (its due time on arq's queue).",
            buckets=WAIT_BUCKETS_S,
            registry=self.registry,
        )


class OutcomeCollector(Collector):
    """Changes applied and dropped, from the plain counts jobs and the dispatcher add to."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "cohortsync_changes_applied",
            "Changes applied to Postgres.",
            value=self._metrics.applied,
        )
        dropped = CounterMetricFamily(
            "cohortsync_changes_dropped", "Changes not applied.", labels=["reason"]
        )
        counts = self._metrics.dropped
        for reason in sorted({*DROP_REASONS, *counts}):
            dropped.add_metric([reason], counts[reason])
        yield dropped


async def render(metrics: WorkerMetrics, scripts: Scripts, settings: Settings) -> str:
    """The Prometheus text exposition of this replica; the queue's gauges from the snapshot
    every replica and the edge read (``core/snapshot.py``)."""
    queue = await queue_collector(scripts, settings)
    return exposition(metrics.registry, queue).decode()
