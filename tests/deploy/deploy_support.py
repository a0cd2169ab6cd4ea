"""Reading what ``deploy/`` declares: the Dockerfile, .dockerignore, compose, manifests, scripts."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import msgspec
import yaml

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
GRAFANA = DEPLOY / "grafana" / "cohortsync.json"
YAMLLINT_CONFIG = DEPLOY / ".yamllint.yaml"

# The metrics the edge and workers export (agreed names), with their labels.
METRICS: dict[str, frozenset[str]] = {
    "cohortsync_queue_depth": frozenset({"state"}),
    "cohortsync_audience_pending": frozenset({"audience_id"}),
    "cohortsync_pending": frozenset(),
    "cohortsync_audiences_with_work": frozenset(),
    "cohortsync_queue_changes_total": frozenset({"outcome"}),
    "cohortsync_changes_accepted_total": frozenset(),
    "cohortsync_changes_applied_total": frozenset(),
    "cohortsync_changes_dropped_total": frozenset({"reason"}),
    "cohortsync_http_requests_total": frozenset({"route", "method", "status"}),
    "cohortsync_http_request_duration_seconds": frozenset({"route", "method"}),
    "cohortsync_job_latency_seconds": frozenset(),
    "cohortsync_limiter_wait_seconds": frozenset(),
    "cohortsync_rate_limit_per_minute": frozenset(),
    "cohortsync_workers_live": frozenset(),
    "cohortsync_tenant_pending": frozenset({"tenant"}),
    "cohortsync_tenant_changes_total": frozenset({"tenant", "outcome"}),
    "cohortsync_tenant_rate_limit_per_minute": frozenset({"tenant"}),
    "cohortsync_demand_changes_per_second": frozenset(),
    "cohortsync_worker_capacity_changes_per_second": frozenset(),
}
HISTOGRAMS = frozenset(
    {
        "cohortsync_http_request_duration_seconds",
        "cohortsync_job_latency_seconds",
        "cohortsync_limiter_wait_seconds",
    }
)
QUEUE_STATES = frozenset({"backlog", "ready", "in_flight", "deferred"})
# Custom resources kubernetes-validate has no schema for; the tests check their fields.
CRD_GROUPS = frozenset({"keda.sh", "monitoring.coreos.com"})


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def console_scripts() -> dict[str, str]:
    """``[project.scripts]``: script name -> ``module:function``."""
    scripts: dict[str, str] = pyproject()["project"]["scripts"]
    return scripts


def load_yaml(path: Path) -> list[Any]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@dataclass(frozen=True)
class Resource:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        kind: str = self.doc["kind"]
        return kind

    @property
    def name(self) -> str:
        name: str = self.doc["metadata"]["name"]
        return name

    @property
    def group(self) -> str:
        api_version: str = self.doc["apiVersion"]
        return api_version.rpartition("/")[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(K8S)}:{self.kind}/{self.name}"


def k8s_resources() -> list[Resource]:
    """Every Kubernetes object under deploy/k8s/ (the kustomization file is not one)."""
    return [
        Resource(path, doc)
        for path in sorted(K8S.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_yaml(path)
    ]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [r.doc for r in k8s_resources() if r.kind == kind and r.name == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    found: list[dict[str, Any]] = spec.get("initContainers", []) + spec["containers"]
    return found


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, resolving a port name to its number."""
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    number: int = numbers[0]
    return number


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def dockerfile_commands() -> tuple[dockerfile.Command, ...]:
    """The Dockerfile parsed by BuildKit's own parser (a syntax error raises)."""
    commands: tuple[dockerfile.Command, ...] = dockerfile.parse_file(str(DOCKERFILE))
    return commands


def dockerfile_stages() -> list[list[dockerfile.Command]]:
    stages: list[list[dockerfile.Command]] = []
    for command in dockerfile_commands():
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    return stages


def dockerfile_args() -> dict[str, str]:
    """Global ``ARG name=default`` values, declared before the first FROM."""
    args: dict[str, str] = {}
    for command in dockerfile_commands():
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
    return args


def dockerignore_includes(relative: str) -> bool:
    """Whether the build context keeps ``relative``: Docker's rule, the last matching line wins."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        # A pattern naming a directory also covers everything below it.
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            included = negated
    return included


def files_under(relative: str) -> Iterator[str]:
    path = ROOT / relative
    if path.is_file():
        yield relative
        return
    for child in sorted(path.rglob("*")):
        if child.is_file() and "__pycache__" not in child.parts:
            yield child.relative_to(ROOT).as_posix()


def compose_environment() -> dict[str, str]:
    """A worker's environment in compose, ``${VAR:-default}`` read as compose does, VAR unset."""
    compose: dict[str, Any] = load_yaml(COMPOSE)[0]
    env: dict[str, Any] = compose["services"]["worker"]["environment"]
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}


def k8s_environment() -> dict[str, str]:
    """What every pod gets from the ConfigMap and the Secret."""
    config: dict[str, str] = find("ConfigMap", "cohortsync-config")["data"]
    secret: dict[str, str] = find("Secret", "cohortsync-secrets")["stringData"]
    return {**config, **secret}


def worker_grace_s(env: dict[str, str]) -> float:
    """The worker's shutdown grace as configured: the largest ``*grace*`` setting, else 0."""
    settings = Settings.from_env(env)
    graces = [
        float(getattr(settings, f.name))
        for f in msgspec.structs.fields(Settings)
        if "grace" in f.name
    ]
    return max(graces, default=0.0)
