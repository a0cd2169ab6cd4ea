"""The queue's Prometheus gauges, which the edge and every worker export from one snapshot."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.status import DEAD_LETTERS_HELP, QueueSnapshot

# A ``*_created`` gauge beside every counter and histogram only doubles the series.
disable_created_metrics()  # type: ignore[no-untyped-call]


class QueueCollector(Collector):
    """The queue's gauges from one snapshot; ``generate_latest`` takes anything with
    ``collect()``, so each scrape renders its own snapshot and scrapes never share state.

    Every exporting process reports the same values, so dashboards take their ``max``."""

    def __init__(self, snapshot: QueueSnapshot, configured_rate_per_minute: int) -> None:
        self._snapshot = snapshot
        self._configured_rate = configured_rate_per_minute

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot
        depth = GaugeMetricFamily(
            "cohortsync_queue_depth", "Changes queued, by state.", labels=["state"]
        )
        for state, n in (
            ("backlog", s.backlog),
            ("ready", s.ready),
            ("in_flight", s.in_flight),
            ("deferred", s.deferred),
        ):
            depth.add_metric([state], n)
        yield depth
        pending = GaugeMetricFamily(
            "cohortsync_audience_pending",
            "Changes accepted and not yet applied, for the COHORTSYNC_METRICS_TOP_AUDIENCES "
            "audiences with the most.",
            labels=["audience_id"],
        )
        for audience in s.audiences:
            if audience.pending > 0:
                pending.add_metric([str(audience.audience_id)], audience.pending)
        yield pending
        t = s.totals
        yield GaugeMetricFamily(
            "cohortsync_pending",
            "Changes accepted and not yet applied, over all audiences.",
            value=t.pending,
        )
        yield GaugeMetricFamily(
            "cohortsync_audiences_with_work",
            "Audiences with changes pending.",
            value=t.audiences_with_work,
        )
        changes = CounterMetricFamily(
            "cohortsync_queue_changes",
            "Changes counted in Redis over all audiences, by outcome (accepted, applied, "
            "dropped, dead); every exporting process reports the same values.",
            labels=["outcome"],
        )
        for outcome, n in (
            ("accepted", t.accepted),
            ("applied", t.applied),
            ("dropped", t.dropped),
            ("dead", t.dead),
        ):
            changes.add_metric([outcome], n)
        yield changes
        yield GaugeMetricFamily(
            "cohortsync_rate_limit_per_minute",
            "Rate limit in force; 0 = none.",
            value=s.rate_per_minute(self._configured_rate),
        )
        yield GaugeMetricFamily(
            "cohortsync_workers_live", "Worker replicas alive now.", value=s.workers_live
        )
        yield GaugeMetricFamily("cohortsync_dead_letters", DEAD_LETTERS_HELP, value=s.dead_letters)


def exposition(*sources: Collector) -> bytes:
    """The Prometheus text exposition of ``sources`` (registries or collectors), in order."""
    return b"".join(generate_latest(source) for source in sources)
