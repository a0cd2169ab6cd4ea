"""An edge and two workers from the image, on the host's network, on this run's own database and
Redis database, with Debian's Prometheus scraping them."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

from tests.deploy.deploy_support import COMPOSE, load_yaml
from tests.deploy_real import prometheus
from tests.deploy_real.podman import podman, remove_containers
from tests.support.process import free_port

READY_TIMEOUT_S = 60.0
# Far above what 5,000 changes need, so the drain is quick; the gauge still shows a limit.
RATE_LIMIT_PER_MINUTE = 300_000
# Small, so a flood with the limiter held back reaches it and the edge answers 429.
MAX_BACKLOG = 5_000


@dataclass(frozen=True)
class Container:
    name: str
    url: str  # where its /metrics and /healthz answer


@dataclass(frozen=True)
class Stack:
    image: str
    env: tuple[str, ...]  # podman --env arguments every container of the stack gets
    edge: Container  # its url: the ops port, where /metrics is served
    edge_public_url: str
    workers: tuple[Container, ...]
    prometheus: prometheus.Prometheus
    key: str  # an API key for every surface

    def admin(self, *args: str) -> str:
        """``cohortsync-admin`` in a container of the image, as an operator runs it."""
        run = ("run", "--rm", "--network", "host", *self.env, self.image, "cohortsync-admin")
        return podman(*run, *args).stdout


def grace_s(service: str) -> float:
    """compose.yaml's stop_grace_period for the service ("90s"), the grace the test allows."""
    (compose,) = load_yaml(COMPOSE)
    period = compose["services"][service]["stop_grace_period"]
    match = re.fullmatch(r"(\d+)s", period)
    assert match, period
    return float(match[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _wait_answering(container: Container, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError):
            if http_get(container.url + path)[0] == 200:
                return
        state = podman("inspect", "--format", "{{.State.Status}}", container.name).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            logs = podman("logs", container.name, check=False)
            raise AssertionError(f"{container.name} is {state}:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)


@contextlib.contextmanager
def running(image: str, database_url: str, redis_url: str) -> Iterator[Stack]:
    prefix = f"cohortsync-deploytest-{os.getpid()}"
    env = {
        "COHORTSYNC_DATABASE_URL": database_url,
        "COHORTSYNC_REDIS_URL": redis_url,
        "COHORTSYNC_HTTP_HOST": "127.0.0.1",
        "COHORTSYNC_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT_PER_MINUTE),
        "COHORTSYNC_MAX_BACKLOG": str(MAX_BACKLOG),
    }
    env_args = tuple(arg for k, v in env.items() for arg in ("--env", f"{k}={v}"))
    edge_port, ops_port = free_port(), free_port()
    edge = Container(f"{prefix}-edge", f"http://127.0.0.1:{ops_port}")
    workers = tuple(
        Container(f"{prefix}-worker-{n}", f"http://127.0.0.1:{free_port()}") for n in (1, 2)
    )
    names = [edge.name, *(w.name for w in workers)]
    try:
        # Each its own hostname, as compose and Kubernetes give every replica (a worker's name,
        # hostname:pid:token, is unique without it; the logs read better with it).
        run = ("run", "--detach", "--network", "host", *env_args)
        ports = (f"COHORTSYNC_HTTP_PORT={edge_port}", f"COHORTSYNC_OPS_PORT={ops_port}")
        edge_env = tuple(arg for port in ports for arg in ("--env", port))
        podman(*run, "--name", edge.name, "--hostname", edge.name, *edge_env, image)
        _wait_answering(edge, "/readyz")
        for worker in workers:
            port = worker.url.rsplit(":", 1)[1]
            metrics = f"COHORTSYNC_WORKER_METRICS_PORT={port}"
            named = ("--name", worker.name, "--hostname", worker.name)
            podman(*run, *named, "--env", metrics, image, "cohortsync-worker")
        for worker in workers:
            _wait_answering(worker, "/healthz")
        address = [c.url.removeprefix("http://") for c in (edge, *workers)]
        with prometheus.running(free_port(), address[:1], address[1:]) as prom:
            public = f"http://127.0.0.1:{edge_port}"
            stack = Stack(image, env_args, edge, public, workers, prom, key="")
            created = stack.admin("create-key", "deploy-test").strip().splitlines()[-1]
            yield dataclasses.replace(stack, key=created)
    finally:
        remove_containers(*names)
