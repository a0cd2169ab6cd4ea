"""The queue's Prometheus gauges, which the edge and every worker export from one snapshot."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.scripts import Scripts
from core.snapshot import read_snapshot, read_tenants
from schemas.settings import Settings
from schemas.status import DEAD_LETTERS_HELP, QueueSnapshot, TenantLoad, demand_per_second

# A ``*_created`` gauge beside every counter and histogram only doubles the series.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Tenants with work exported (busiest first), each with a few series: bounded by tenants.
METRICS_TENANTS = 1000


class QueueCollector(Collector):
    """The queue's gauges from one snapshot; ``generate_latest`` takes anything with
    ``collect()``, so each scrape renders its own snapshot and scrapes never share state.

    Every exporting process reports the same values, so dashboards take their ``max``."""

    def __init__(
        self,
        snapshot: QueueSnapshot,
        configured_rate_per_minute: int,
        tenants: Sequence[TenantLoad] = (),
        fleet_rate_per_minute: int = 0,
        capacity_per_second: float = 0.0,
    ) -> None:
        self._snapshot = snapshot
        self._configured_rate = configured_rate_per_minute
        self._tenants = list(tenants)
        self._fleet_rate = fleet_rate_per_minute
        self._capacity = capacity_per_second

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
        yield from self._per_tenant()

    def _per_tenant(self) -> Iterator[Metric]:
        """One series per tenant with work (bounded by tenants, never by audiences)."""
        depth = GaugeMetricFamily(
            "cohortsync_tenant_pending",
            "Changes accepted and not yet applied, per tenant with work.",
            labels=["tenant"],
        )
        changes = CounterMetricFamily(
            "cohortsync_tenant_changes",
            "Changes counted in Redis per tenant with work, by outcome (accepted, applied, "
            "dropped, dead).",
            labels=["tenant", "outcome"],
        )
        rate = GaugeMetricFamily(
            "cohortsync_tenant_rate_limit_per_minute",
            "The rate each tenant with work is dispatched at; 0 = none.",
            labels=["tenant"],
        )
        for load in self._tenants:
            tenant, t = str(load.tenant), load.totals
            depth.add_metric([tenant], t.pending)
            for outcome, n in (
                ("accepted", t.accepted),
                ("applied", t.applied),
                ("dropped", t.dropped),
                ("dead", t.dead),
            ):
                changes.add_metric([tenant, outcome], n)
            rate.add_metric([tenant], load.rate_per_minute(self._configured_rate))
        yield depth
        yield changes
        yield rate
        yield GaugeMetricFamily(
            "cohortsync_demand_changes_per_second",
            "What the tenants with work may be applied at: the sum of their rates (a tenant "
            "without a limit: its pending over a minute), capped by the fleet-wide limit. "
            "Scale workers on this divided by cohortsync_worker_capacity_changes_per_second.",
            value=demand_per_second(self._tenants, self._configured_rate, self._fleet_rate),
        )
        yield GaugeMetricFamily(
            "cohortsync_worker_capacity_changes_per_second",
            "Changes one worker replica applies per second with no limit (make bench; "
            "COHORTSYNC_WORKER_CAPACITY_PER_SECOND).",
            value=self._capacity,
        )


async def queue_collector(scripts: Scripts, settings: Settings) -> QueueCollector:
    """The queue's gauges as of now, read the one way the edge and the workers share."""
    snapshot = await read_snapshot(scripts, settings.metrics_top_audiences)
    tenants = await read_tenants(scripts, METRICS_TENANTS)
    return QueueCollector(
        snapshot,
        settings.rate_limit_per_minute,
        tenants,
        settings.fleet_rate_limit_per_minute,
        settings.worker_capacity_per_second,
    )


def exposition(*sources: Collector) -> bytes:
    """The Prometheus text exposition of ``sources`` (registries or collectors), in order."""
    return b"".join(generate_latest(source) for source in sources)
