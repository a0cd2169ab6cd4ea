"""The edge's /metrics and a worker's: after a known workload the scraped values are the known
counts, and the expositions parse."""

from __future__ import annotations

import time

import asyncpg
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from ingest.app import create_app
from schemas.settings import Settings
from tests.support.edge import Client, running_edge
from tests.support.redis_keys import KEYS, scripts
from tests.support.status import (
    Samples,
    post_changes,
    running_worker,
    samples,
    value,
    wait_until,
)
from tests.support.worker import accept, new_audience
from worker.drain import is_drained
from worker.metrics import LATENCY_BUCKETS_S, WAIT_BUCKETS_S, WorkerMetrics, render
from worker.state import STATE_KEY, WorkerState


async def scrape(client: Client) -> Samples:
    response = await client.get("/metrics", headers={"Authorization": ""})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(await response.text())


async def test_counts_requests_by_route_template_and_accepted_changes(
    client: Client, db: asyncpg.Pool
) -> None:
    a = await new_audience(db, "a")
    b = await new_audience(db, "b")
    await post_changes(client, [(a, "add", f"p{i}") for i in range(15)])
    await post_changes(
        client,
        [(b, "add", f"p{i}") for i in range(10)] + [(a, "delete", f"q{i}") for i in range(5)],
    )
    await post_changes(client, [(a, "add", "x"), (a + b + 1000, "add", "y")], expect=404)
    members = await client.get(f"/v1/audiences/{a}/memberships")
    assert members.status == 200
    assert (await client.get(f"/no/such/{a}")).status == 404

    found = await scrape(client)
    assert value(found, "cohortsync_changes_accepted_total") == 30
    post = {"route": "/v2/customer_audiences", "method": "POST"}
    assert value(found, "cohortsync_http_requests_total", **post, status="204") == 2
    assert value(found, "cohortsync_http_requests_total", **post, status="404") == 1
    assert value(found, "cohortsync_http_request_duration_seconds_count", **post) == 3
    read = {"route": "/v1/audiences/{audienceId}/memberships", "method": "GET"}
    assert value(found, "cohortsync_http_requests_total", **read, status="200") == 1
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert value(found, "cohortsync_http_requests_total", **unmatched) == 1
    # Only route templates as labels: a path's ids never become a series.
    templates = {r.resource.canonical for r in client.app.router.routes() if r.resource}
    routes = {dict(labels)["route"] for (_, labels) in found if dict(labels).get("route")}
    assert routes <= templates | {"unmatched"}
    assert not routes & {f"/no/such/{a}", f"/v1/audiences/{a}/memberships"}
    # What /readyz checks: both reachable here.
    assert value(found, "cohortsync_dependency_up", dependency="redis") == 1
    assert value(found, "cohortsync_dependency_up", dependency="postgres") == 1


async def test_queue_gauges_follow_the_workload(
    client: Client, settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db, "a")
    b = await new_audience(db, "b")
    await post_changes(client, [(a, "add", f"p{i}") for i in range(20)])
    await post_changes(
        client,
        [(b, "add", f"p{i}") for i in range(10)] + [(a, "delete", f"q{i}") for i in range(5)],
    )

    before = await scrape(client)
    depth = {
        s: value(before, "cohortsync_queue_depth", state=s)
        for s in ("backlog", "ready", "in_flight", "deferred")
    }
    assert depth == {"backlog": 35, "ready": 0, "in_flight": 0, "deferred": 0}
    assert value(before, "cohortsync_audience_pending", audience_id=str(a)) == 25
    assert value(before, "cohortsync_audience_pending", audience_id=str(b)) == 10
    assert value(before, "cohortsync_pending") == 35
    assert value(before, "cohortsync_audiences_with_work") == 2
    assert value(before, "cohortsync_queue_changes_total", outcome="accepted") == 35
    assert value(before, "cohortsync_workers_live") == 0
    assert value(before, "cohortsync_rate_limit_per_minute") == settings.rate_limit_per_minute
    await redis.hset(KEYS.config, "rate_per_minute", "0")  # type: ignore[misc]
    lifted = await scrape(client)
    assert value(lifted, "cohortsync_rate_limit_per_minute") == 0

    async with running_worker(settings, redis) as worker:
        await wait_until(lambda: is_drained(redis, KEYS), "the queue to drain")
        during = await scrape(client)
        assert value(during, "cohortsync_workers_live") == 1
        assert value(during, "cohortsync_queue_depth", state="backlog") == 0
        assert not [k for k in during if k[0] == "cohortsync_audience_pending"]

        state: WorkerState = worker.ctx[STATE_KEY]

        async def counted() -> bool:
            # The applied counter lands a few milliseconds after the commit.
            return state.metrics.applied == 35

        await wait_until(counted, "35 changes applied")
        own = samples(await render(state.metrics, state.scripts, settings))
        assert value(own, "cohortsync_changes_applied_total") == 35
        assert value(own, "cohortsync_changes_dropped_total", reason="stale") == 0
        assert value(own, "cohortsync_job_latency_seconds_count") == 35
        assert value(own, "cohortsync_limiter_wait_seconds_count") == 35
        assert value(own, "cohortsync_workers_live") == 1
        assert value(own, "cohortsync_queue_depth", state="backlog") == 0
    after = await scrape(client)
    assert value(after, "cohortsync_workers_live") == 0
    assert value(after, "cohortsync_pending") == 0
    assert value(after, "cohortsync_queue_changes_total", outcome="applied") == 35
    rows = await db.fetchval("SELECT count(*) FROM memberships")
    assert rows == 35


async def test_a_dead_replica_is_forgotten_and_never_counted(
    client: Client, settings: Settings, redis: aioredis.Redis
) -> None:
    now_ms = int(time.time() * 1000)
    expired = KEYS.health_check("gone:1")
    crashed = KEYS.health_check("crashed:2")
    alive = KEYS.health_check("alive:3")
    await redis.zadd(KEYS.workers, {expired: now_ms - 1000, crashed: now_ms + 60_000})
    await redis.zadd(KEYS.workers, {alive: now_ms + 60_000})
    # What arq writes; the crashed replica's key has expired already.
    await redis.set(
        alive, b"Nov-28 12:00:00 j_complete=9 j_failed=0 j_retried=0 j_ongoing=7 queued=12"
    )
    await redis.set(expired, b"j_ongoing=100")
    # In flight is what runs under a lease: 7 held; 2 whose holder died and whose lease lapsed
    # are ready for any replica, like the 1 not started yet on arq's queue.
    await redis.zadd(KEYS.leases, {f"cs:1:{v}": now_ms + 10_000 for v in range(7)})
    await redis.zadd(KEYS.leases, {f"cs:1:{v}": now_ms - 1000 for v in range(7, 9)})
    await redis.zadd(KEYS.queue, {"cs:1:9": now_ms - 5000})

    found = await scrape(client)
    assert value(found, "cohortsync_workers_live") == 1
    assert value(found, "cohortsync_queue_depth", state="in_flight") == 7
    assert value(found, "cohortsync_queue_depth", state="ready") == 3
    assert await redis.zscore(KEYS.workers, expired) is None
    assert await redis.zscore(KEYS.workers, crashed) is not None


async def test_without_redis_the_edge_still_reports_its_own_metrics(settings: Settings) -> None:
    broken = settings.with_changes(redis_url="redis://127.0.0.1:1/0")
    async with running_edge(broken, app=create_app(broken)) as client:
        assert (await client.get("/healthz")).status == 200
        response = await client.get("/metrics")
        assert response.status == 200
        found = samples(await response.text())
    health = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(found, "cohortsync_http_requests_total", **health) == 1
    assert value(found, "cohortsync_changes_accepted_total") == 0
    assert not [k for k in found if k[0].startswith("cohortsync_queue_depth")]
    # The alert on /readyz's dependencies names the one this edge cannot reach.
    assert value(found, "cohortsync_dependency_up", dependency="redis") == 0
    assert value(found, "cohortsync_dependency_up", dependency="postgres") == 1


async def test_a_worker_exports_its_series_as_dashboards_and_alerts_read_them(
    settings: Settings, redis: aioredis.Redis
) -> None:
    metrics = WorkerMetrics()
    metrics.applied += 2
    metrics.dropped["stale"] += 1
    metrics.job_latency.observe(0.3)
    metrics.limiter_wait.observe(0.002)
    text = await render(metrics, scripts(redis), settings)

    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == {
        "cohortsync_changes_applied": "counter",
        "cohortsync_changes_dropped": "counter",
        "cohortsync_job_latency_seconds": "histogram",
        "cohortsync_limiter_wait_seconds": "histogram",
        "cohortsync_queue_depth": "gauge",
        "cohortsync_audience_pending": "gauge",
        "cohortsync_rate_limit_per_minute": "gauge",
        "cohortsync_workers_live": "gauge",
        "cohortsync_dead_letters": "gauge",
        "cohortsync_pending": "gauge",
        "cohortsync_audiences_with_work": "gauge",
        "cohortsync_queue_changes": "counter",
        "cohortsync_tenant_pending": "gauge",
        "cohortsync_tenant_changes": "counter",
        "cohortsync_tenant_rate_limit_per_minute": "gauge",
        "cohortsync_demand_changes_per_second": "gauge",
        "cohortsync_worker_capacity_changes_per_second": "gauge",
    }
    found = samples(text)
    assert not [name for name, _ in found if name.endswith("_created")]
    assert value(found, "cohortsync_changes_applied_total") == 2
    # Both reasons from the start, so a rate() over either never begins at a missing series.
    assert value(found, "cohortsync_changes_dropped_total", reason="stale") == 1
    assert value(found, "cohortsync_changes_dropped_total", reason="dead_letter") == 0
    for name, bounds_s in (
        ("cohortsync_job_latency_seconds", LATENCY_BUCKETS_S),
        ("cohortsync_limiter_wait_seconds", WAIT_BUCKETS_S),
    ):
        les = [s.labels["le"] for s in families[name].samples if s.name == f"{name}_bucket"]
        assert [float(le) for le in les] == [*bounds_s, float("inf")]
        assert value(found, f"{name}_count") == 1
    assert value(found, "cohortsync_job_latency_seconds_bucket", le="0.25") == 0
    assert value(found, "cohortsync_job_latency_seconds_bucket", le="0.5") == 1
    assert value(found, "cohortsync_limiter_wait_seconds_sum") == 0.002


async def test_the_edge_and_a_worker_export_the_same_queue_gauges(
    client: Client, settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    a = await new_audience(db, "a")
    await post_changes(client, [(a, "add", f"p{i}") for i in range(7)])
    queue = {
        "cohortsync_queue_depth",
        "cohortsync_audience_pending",
        "cohortsync_rate_limit_per_minute",
        "cohortsync_workers_live",
        "cohortsync_dead_letters",
        "cohortsync_pending",
        "cohortsync_audiences_with_work",
        "cohortsync_queue_changes_total",
    }

    def of_queue(found: Samples) -> Samples:
        return {k: v for k, v in found.items() if k[0] in queue}

    edge = of_queue(await scrape(client))
    worker = of_queue(samples(await render(WorkerMetrics(), scripts(redis), settings)))
    assert worker == edge
    assert value(edge, "cohortsync_audience_pending", audience_id=str(a)) == 7


async def test_only_the_top_audiences_get_a_series_and_the_totals_cover_all(
    client: Client, settings: Settings, db: asyncpg.Pool
) -> None:
    # More audiences with work than the default top 20: one series each for the 20 busiest.
    assert settings.metrics_top_audiences == 20
    audiences = [await new_audience(db, f"a{i}") for i in range(30)]
    await post_changes(
        client, [(a, "add", f"p{j}") for i, a in enumerate(audiences) for j in range(i + 1)]
    )
    found = await scrape(client)
    series = {
        int(dict(labels)["audience_id"]): v
        for (name, labels), v in found.items()
        if name == "cohortsync_audience_pending"
    }
    assert series == {a: i + 1 for i, a in enumerate(audiences) if i >= 10}
    assert value(found, "cohortsync_pending") == sum(range(1, 31))
    assert value(found, "cohortsync_audiences_with_work") == 30


async def test_tenant_series_and_the_demand_workers_scale_on(
    settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """One series per tenant with work (never per audience), and the demand: the sum of the
    tenants' rates, a tenant without a limit asking for its pending within a minute, at most
    the fleet's cap."""
    a, b, c = [await new_audience(db, n) for n in "abc"]
    await accept(redis, a, [("add", f"p{i}") for i in range(30)], tenant=2)
    await accept(redis, b, [("add", f"p{i}") for i in range(20)], tenant=3)
    await accept(redis, c, [("add", f"p{i}") for i in range(120)], tenant=4)
    # As the workers publish them (worker/rates.py): 2 at 600/min, 3 at the default, 4 unlimited.
    await redis.hset(KEYS.tenant_rates, mapping={"2": "600:10", "4": "0:0"})  # type: ignore[misc]
    await redis.hset(KEYS.config, "workers_rate_per_minute", "1200")  # type: ignore[misc]

    own = settings.with_changes(worker_capacity_per_second=2500.0)
    found = samples(await render(WorkerMetrics(), scripts(redis), own))

    assert value(found, "cohortsync_tenant_pending", tenant="2") == 30
    assert value(found, "cohortsync_tenant_pending", tenant="3") == 20
    assert value(found, "cohortsync_tenant_changes_total", tenant="4", outcome="accepted") == 120
    assert value(found, "cohortsync_tenant_rate_limit_per_minute", tenant="2") == 600
    assert value(found, "cohortsync_tenant_rate_limit_per_minute", tenant="3") == 1200
    assert value(found, "cohortsync_tenant_rate_limit_per_minute", tenant="4") == 0
    # 600/min + 1200/min + 120 pending within a minute = 10 + 20 + 2 per second.
    assert value(found, "cohortsync_demand_changes_per_second") == 32
    assert value(found, "cohortsync_worker_capacity_changes_per_second") == 2500
    tenants = {dict(labels)["tenant"] for name, labels in found if "tenant" in dict(labels)}
    assert tenants == {"2", "3", "4"}

    capped = settings.with_changes(fleet_rate_limit_per_minute=600)
    found = samples(await render(WorkerMetrics(), scripts(redis), capped))
    assert value(found, "cohortsync_demand_changes_per_second") == 10
