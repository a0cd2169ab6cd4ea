"""A worker replica's Prometheus metrics: its own counters and histograms, plus the queue's
gauges read from Redis at each scrape (every exporting process reports the same values, so
dashboards take their ``max``)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis

from schemas.lua import source
from schemas.settings import Settings
from schemas.status import DEAD_LETTERS_HELP, parse_snapshot, snapshot_args, snapshot_keys

# From acceptance at the edge to committed in Postgres: seconds when idle, hours behind a backlog.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)
# A job's wait for its rate-limit slot.
WAIT_BUCKETS_S = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, n in zip([*self.buckets, float("inf")], self.counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
        out += [f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]
        return out


@dataclass
class WorkerMetrics:
    """What this replica did since it started."""

    applied: int = 0
    # reason -> changes: "stale" (older than the stored version or a clear, or the audience is
    # deleted) or "dead_letter" (failed permanently, kept in cs:dead).
    dropped: Counter[str] = field(default_factory=Counter)
    job_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    limiter_wait: Histogram = field(default_factory=lambda: Histogram(WAIT_BUCKETS_S))

    def lines(self) -> list[str]:
        out = _header("cohortsync_changes_applied_total", "counter", "Changes applied to Postgres.")
        out.append(f"cohortsync_changes_applied_total {self.applied}")
        out += _header("cohortsync_changes_dropped_total", "counter", "Changes not applied.")
        for reason in sorted({"stale", "dead_letter", *self.dropped}):
            out.append(
                f'cohortsync_changes_dropped_total{{reason="{reason}"}} {self.dropped[reason]}'
            )
        out += _header("cohortsync_job_latency_seconds", "histogram", "From acceptance to applied.")
        out += self.job_latency.lines("cohortsync_job_latency_seconds")
        out += _header(
            "cohortsync_limiter_wait_seconds", "histogram", "A job's wait for its rate slot."
        )
        out += self.limiter_wait.lines("cohortsync_limiter_wait_seconds")
        return out


async def queue_lines(redis: Redis, settings: Settings) -> list[str]:
    """The queue's state as every replica and the edge see it (``queue_state.lua``, the same
    snapshot the edge's /metrics and /v1/status read), from Redis now."""
    reply = await redis.register_script(source("queue_state"))(
        keys=snapshot_keys(settings.queue_name), args=snapshot_args(time.time())
    )
    snapshot = parse_snapshot(reply)
    out = _header("cohortsync_queue_depth", "gauge", "Changes queued, by state.")
    depth = {
        "backlog": snapshot.backlog,
        "ready": snapshot.ready,
        "in_flight": snapshot.in_flight,
        "deferred": snapshot.deferred,
    }
    out += [f'cohortsync_queue_depth{{state="{s}"}} {n}' for s, n in depth.items()]
    out += _header(
        "cohortsync_audience_pending",
        "gauge",
        "Changes accepted and not yet applied, per audience with a backlog.",
    )
    out += [
        f'cohortsync_audience_pending{{audience_id="{a.audience_id}"}} {a.pending}'
        for a in snapshot.audiences
    ]
    rate_per_minute = snapshot.rate_per_minute(settings.rate_limit_per_minute)
    out += _header("cohortsync_rate_limit_per_minute", "gauge", "Rate limit in force; 0 = none.")
    out.append(f"cohortsync_rate_limit_per_minute {rate_per_minute}")
    out += _header("cohortsync_workers_live", "gauge", "Worker replicas alive now.")
    out.append(f"cohortsync_workers_live {snapshot.workers_live}")
    out += _header("cohortsync_dead_letters", "gauge", DEAD_LETTERS_HELP)
    out.append(f"cohortsync_dead_letters {snapshot.dead_letters}")
    return out


async def render(metrics: WorkerMetrics, redis: Redis, settings: Settings) -> str:
    """The Prometheus text exposition of this replica."""
    return "\n".join([*metrics.lines(), *await queue_lines(redis, settings)]) + "\n"


def _header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
