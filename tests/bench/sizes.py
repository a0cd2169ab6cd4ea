"""How big and how long each measurement is: the full run, and ``--quick`` for a smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    # Edge acceptance: concurrent connections, untimed warm-up, then the measured window.
    connections: int
    accept_warmup_s: float
    accept_s: float
    # Edge latency: requests per sender (4 senders); arq's batches per sender.
    latency_requests: int
    arq_latency_batches: int
    # Worker capacity: untimed warm-up, then the measured window, per configuration.
    capacity_warmup_s: float
    capacity_s: float
    # Limiter accuracy: the measured window at 6000/min with 4 replicas.
    rate_window_s: float
    # Fairness: the large audience's backlog, and how long it drains before the small one comes.
    fairness_backlog: int
    fairness_warmup_s: float
    # Memory: users queued in backlogs, and jobs queued with arq for the baseline.
    memory_users: int
    memory_arq_jobs: int
    # Claims: jobs other replicas run, from the baseline's to the largest (x10 steps).
    claim_held: tuple[int, ...]
    # Postgres: audiences on the page, the memberships over them (x10 steps), a big audience's
    # members, and the pages sampled to extrapolate today's OFFSET read of it.
    page_audiences: int
    page_memberships: tuple[int, ...]
    big_audience_members: int
    offset_samples: int
    # Status: audiences with work, x10 steps; the largest also runs the snapshot before.
    status_audiences: tuple[int, ...]
    # DRR shares: audiences with work, and the window their shares are counted over.
    share_audiences: int
    share_window_s: float
    # Tenant rates: tenants at rates spread over 60-600/min, the worker processes, the untimed
    # warm-up and the window each tenant's applied changes are counted over.
    rate_tenants: int
    rate_tenant_workers: int
    rate_tenant_warmup_s: float
    rate_tenant_window_s: float
    # Tenant drain: the big tenant's backlog, the small tenants beside it and each one's changes.
    drain_big_backlog: int
    drain_small_tenants: int
    drain_small_changes: int
    # Tenant capacity: tenants with one audience each, against one tenant with as many audiences.
    capacity_tenants: int


FULL = Sizes(
    connections=8,
    accept_warmup_s=2.0,
    accept_s=10.0,
    latency_requests=500,
    arq_latency_batches=3,
    capacity_warmup_s=3.0,
    capacity_s=10.0,
    rate_window_s=60.0,
    fairness_backlog=100_000,
    fairness_warmup_s=5.0,
    memory_users=1_000_000,
    memory_arq_jobs=100_000,
    claim_held=(100, 1_000, 10_000, 100_000),
    page_audiences=1000,
    page_memberships=(100_000, 1_000_000, 10_000_000),
    big_audience_members=1_000_000,
    offset_samples=10,
    status_audiences=(1_000, 10_000, 100_000),
    share_audiences=1000,
    share_window_s=60.0,
    rate_tenants=200,
    rate_tenant_workers=4,
    rate_tenant_warmup_s=10.0,
    rate_tenant_window_s=60.0,
    drain_big_backlog=1_000_000,
    drain_small_tenants=200,
    drain_small_changes=500,
    capacity_tenants=1000,
)

QUICK = Sizes(
    connections=4,
    accept_warmup_s=0.3,
    accept_s=1.0,
    latency_requests=20,
    arq_latency_batches=1,
    capacity_warmup_s=0.3,
    capacity_s=1.0,
    rate_window_s=5.0,
    fairness_backlog=5_000,
    fairness_warmup_s=1.0,
    memory_users=20_000,
    memory_arq_jobs=2_000,
    claim_held=(100, 10_000),
    page_audiences=100,
    page_memberships=(1_000, 10_000, 100_000),
    big_audience_members=20_000,
    offset_samples=4,
    status_audiences=(100, 1_000),
    share_audiences=100,
    share_window_s=10.0,
    rate_tenants=10,
    rate_tenant_workers=2,
    rate_tenant_warmup_s=2.0,
    rate_tenant_window_s=10.0,
    drain_big_backlog=20_000,
    drain_small_tenants=20,
    drain_small_changes=50,
    capacity_tenants=50,
)
