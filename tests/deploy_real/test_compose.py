"""deploy/compose.yaml as written, started with podman-compose: Redis with AOF, Postgres, the
one-shot migrate, the edge and 3 workers; a simulated cohort sync through the published port
ends exact; ``down`` leaves nothing running."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.deploy_real import podman as pm
from tests.deploy_real.compose import Compose, project_name, standin
from tests.deploy_real.conftest import record
from tests.deploy_real.stack import http_get
from tests.support.process import ROOT, environment, free_port
from tests.support.status import samples, value

pytestmark = pytest.mark.deploy

USERS = 3000
RATE_LIMIT_PER_MINUTE = 600_000
WORKERS = 3


@pytest.fixture(scope="module")
def compose(image: str, base: str) -> Iterator[Compose]:
    variables = {
        "POSTGRES_IMAGE": standin("postgres", base),
        "REDIS_IMAGE": standin("redis", base),
        "IMAGE_TAG": image.rsplit(":", 1)[1],
        "EDGE_PORT": str(free_port()),
        "EDGE_OPS_PORT": str(free_port()),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "COHORTSYNC_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
    }
    found = Compose(project_name(), variables)
    try:
        yield found
    finally:
        found.remove_everything()


def test_compose_up_simulate_exact_and_down_leaves_nothing(compose: Compose) -> None:
    # In compose's order, each step once its dependencies are healthy or done (see Compose).
    compose("up", "--detach", "--no-build", "postgres", "redis")
    compose.wait_healthy(compose.container("postgres"))
    compose.wait_healthy(compose.container("redis"))
    compose("up", "--detach", "--no-build", "--no-deps", "migrate")
    assert pm.podman("wait", compose.container("migrate")).stdout.strip() == "0"
    compose("up", "--detach", "--no-build", "--no-deps", "edge", "worker")
    compose.wait_healthy(compose.container("edge"))
    for n in range(1, WORKERS + 1):
        compose.wait_healthy(compose.container("worker", n))

    aof = pm.podman("exec", compose.container("redis"), "redis-cli", "config", "get", "appendonly")
    assert aof.stdout.split() == ["appendonly", "yes"]
    edge = compose.container("edge")
    key = pm.podman("exec", edge, "cohortsync-admin", "create-key", "compose").stdout.split()[-1]
    url = f"http://127.0.0.1:{compose.variables['EDGE_PORT']}"
    env = environment()
    simulated = subprocess.run(
        [
            sys.executable,
            "-m",
            "admin.main",
            "simulate",
            f"--url={url}",
            f"--key={key}",
            f"--users={USERS}",
            f"--rate-per-minute={RATE_LIMIT_PER_MINUTE}",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    record(
        "compose: simulate through the published port", simulated.stdout.strip().splitlines()[-1]
    )
    # Metrics are served on the ops port only (COHORTSYNC_OPS_PORT), published to this host.
    assert http_get(f"{url}/metrics")[0] == 404
    status, metrics = http_get(f"http://127.0.0.1:{compose.variables['EDGE_OPS_PORT']}/metrics")
    assert status == 200
    assert value(samples(metrics), "cohortsync_workers_live") == WORKERS

    assert len(compose.containers(running_only=True)) == 2 + 1 + WORKERS  # migrate has exited
    compose("down", "--timeout", "90")
    assert compose.containers(running_only=False) == []
