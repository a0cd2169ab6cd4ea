"""The image as operators run it: an edge and two workers drain 5,000 changes exactly; a real
Prometheus scrapes them and answers every PromQL expression in deploy/; SIGTERM stops each
container cleanly within its grace; with no worker left, the alert goes pending. In file order:
each test goes on from the state the one before left."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import redis

from tests.deploy_real import prometheus
from tests.deploy_real.conftest import record
from tests.deploy_real.podman import podman
from tests.deploy_real.stack import (
    RATE_LIMIT_PER_MINUTE,
    Container,
    Stack,
    grace_s,
    http_get,
    running,
)
from tests.support.status import samples, value

pytestmark = pytest.mark.deploy

CHANGES = 5_000
# Prometheus scrapes and evaluates every 10 s (deploy/prometheus/prometheus.yaml): a rate needs
# two scrapes, an alert one more evaluation.
SCRAPED_TIMEOUT_S = 60.0
FLOOD_BATCH = 1000
FLOOD_MAX_REQUESTS = 40


@pytest.fixture(scope="module")
def stack(image: str, database_url: str, redis_url: str) -> Iterator[Stack]:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    with running(image, database_url, redis_url) as found:
        yield found


def scrape(container: Container) -> str:
    status, text = http_get(f"{container.url}/metrics")
    assert status == 200, text
    return text


async def test_edge_and_two_workers_drain_5000_changes_exactly(
    stack: Stack, database_url: str
) -> None:
    started = time.monotonic()
    out = stack.admin(
        "simulate",
        f"--url={stack.edge_public_url}",
        f"--key={stack.key}",
        f"--users={CHANGES}",
        "--diffs=0",
        f"--rate-per-minute={RATE_LIMIT_PER_MINUTE}",
    )
    record("5,000 changes drained by 2 worker containers", f"{time.monotonic() - started:.1f} s")
    applied = [
        value(samples(scrape(w)), "cohortsync_changes_applied_total") or 0.0 for w in stack.workers
    ]
    assert sum(applied) == CHANGES, (applied, out)
    edge = samples(scrape(stack.edge))
    assert value(edge, "cohortsync_workers_live") == 2
    assert value(edge, "cohortsync_changes_accepted_total") == CHANGES
    conn = await asyncpg.connect(database_url)
    try:
        members = await conn.fetchval("SELECT count(*) FROM memberships WHERE member")
    finally:
        await conn.close()
    assert members == CHANGES


def test_worker_check_inside_a_worker_container(stack: Stack) -> None:
    for worker in stack.workers:
        podman("exec", worker.name, "cohortsync-worker", "--check")
    # Where no worker runs, the same command fails: it asks the replica, not the image.
    alone = ("run", "--rm", "--network", "host", "--env", "COHORTSYNC_WORKER_METRICS_PORT=1")
    assert podman(*alone, stack.image, "cohortsync-worker", "--check", check=False).returncode


def _post_cohort(stack: Stack, n: int) -> int:
    body = {
        "cohort_name": "deploy flood",
        "cohort_id": "deploy-flood",
        "in_cohort": True,
        "computed_time": str(int(time.time())),
        "message_id": f"flood-{uuid.uuid4().hex}",
        "users": [{"user_id": f"flood-{n}-{i}"} for i in range(FLOOD_BATCH)],
    }
    request = urllib.request.Request(
        f"{stack.edge_public_url}/amplitude/cohorts",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"ApiKey-v1 {stack.key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_every_promql_expression_in_deploy_returns_data(stack: Stack) -> None:
    # A backlog the workers hold back (1 change a minute) until the edge refuses more: the
    # per-audience and 429 queries then have something to show.
    stack.admin("set-rate", "1")
    statuses = [_post_cohort(stack, n) for n in range(FLOOD_MAX_REQUESTS)]
    assert 429 in statuses, statuses
    assert statuses.count(200) >= 1, statuses
    prom = stack.prometheus
    prom.wait_for('cohortsync_http_requests_total{status="429"}', SCRAPED_TIMEOUT_S)
    evaluated: list[str] = []
    for expression in prometheus.data_expressions():
        found = prom.wait_for(expression.promql, SCRAPED_TIMEOUT_S)
        evaluated.append(f"{expression.where}: {expression.promql} -> {len(found)} series")
    # Alert conditions are false on a healthy stack; Prometheus must still accept each one.
    for expression in prometheus.alert_expressions():
        found = prom.query(expression.promql)
        evaluated.append(f"{expression.where}: {len(found)} series now")
    record("PromQL evaluated", "\n  " + "\n  ".join(evaluated))


def test_promtool_check_metrics_passes_on_every_exposition(stack: Stack) -> None:
    # The edge serves /metrics on its ops port (what Prometheus scrapes), not the public one.
    assert http_get(f"{stack.edge_public_url}/metrics")[0] == 404
    for container in (stack.edge, *stack.workers):
        checked = prometheus.check_metrics(scrape(container))
        assert checked.returncode == 0, (container.name, checked.stdout, checked.stderr)


def _stop(container: Container, grace: float) -> float:
    """SIGTERM (podman stop), SIGKILL past ``grace``; the seconds it took; asserts exit 0."""
    started = time.monotonic()
    podman("stop", "--time", f"{grace:g}", container.name, timeout_s=grace + 30)
    took = time.monotonic() - started
    code = podman("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout.strip()
    assert code == "0", (container.name, code, podman("logs", container.name).stderr[-3000:])
    assert took < grace, (container.name, took)
    return took


def test_sigterm_stops_each_worker_within_its_grace_and_no_live_worker_goes_pending(
    stack: Stack,
) -> None:
    grace = grace_s("worker")
    took = [_stop(worker, grace) for worker in stack.workers]
    record(
        "worker SIGTERM to exit 0", ", ".join(f"{t:.1f} s" for t in took) + f" (grace {grace:g} s)"
    )
    deadline = time.monotonic() + SCRAPED_TIMEOUT_S
    while True:
        alerts = [
            a
            for a in stack.prometheus.alerts()
            if a["labels"]["alertname"] == "CohortsyncNoLiveWorker"
        ]
        if alerts:
            break
        assert time.monotonic() < deadline, stack.prometheus.alerts()
        time.sleep(1)
    (alert,) = alerts
    assert alert["state"] == "pending", alert  # for: 2m, so not yet firing
    record(
        "alert on the real stack",
        f"{alert['labels']['alertname']} {alert['state']} since {alert['activeAt']}",
    )


def test_sigterm_stops_the_edge_within_its_grace(stack: Stack) -> None:
    grace = grace_s("edge")
    took = _stop(stack.edge, grace)
    record("edge SIGTERM to exit 0", f"{took:.1f} s (grace {grace:g} s)")
