"""Debian's Prometheus run on deploy/prometheus/prometheus.yaml, and every PromQL expression that
deploy/ holds, as the dashboard, the autoscalers and the alerts will send them."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.deploy_support import DEPLOY, GRAFANA, K8S, load_yaml

PROMETHEUS_DIR = DEPLOY / "prometheus"
READY_TIMEOUT_S = 30.0
# Kubernetes discovery would add this label; the scrape config's targets carry it instead.
NAMESPACE = "cohortsync"


@dataclass(frozen=True)
class Expression:
    where: str
    promql: str


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def data_expressions() -> list[Expression]:
    """What must return data on a running stack: the KEDA trigger, the prometheus-adapter rule
    (as the adapter renders it for the HPA's selector) and every Grafana panel's queries."""
    found: list[Expression] = []
    (scaled,) = load_yaml(K8S / "worker-scaledobject.yaml")
    for trigger in scaled["spec"]["triggers"]:
        found.append(Expression("KEDA trigger", trigger["metadata"]["query"]))
    (adapter,) = load_yaml(PROMETHEUS_DIR / "adapter-rules.yaml")
    for rule in adapter["rules"]["external"]:
        found.append(Expression("prometheus-adapter seriesQuery", rule["seriesQuery"]))
        series = rule["seriesQuery"].split("{")[0]
        rendered = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}"')
        )
        found.append(Expression("prometheus-adapter metricsQuery", rendered))
    dashboard = json.loads(GRAFANA.read_text())
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append(Expression(f"Grafana: {panel['title']}", target["expr"]))
    return found


def alert_expressions() -> list[Expression]:
    (rules,) = load_yaml(PROMETHEUS_DIR / "alerts.yaml")
    return [
        Expression(f"alert {rule['alert']}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's samples (vector or scalar alike)."""
        data = self.get("/api/v1/query", query=promql)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def finite(self, promql: str) -> list[dict[str, Any]]:
        """The samples with a number (histogram_quantile of nothing gives NaN: no data)."""
        return [s for s in self.query(promql) if math.isfinite(float(s["value"][1]))]

    def wait_for(self, promql: str, timeout_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while not (found := self.finite(promql)):
            assert time.monotonic() < deadline, f"no data for {promql} in {timeout_s:g} s"
            time.sleep(1)
        return found

    def alerts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.get("/api/v1/alerts")["alerts"]
        return found


def write_targets(directory: Path, job: str, addresses: list[str]) -> None:
    targets = directory / "targets"
    targets.mkdir(exist_ok=True)
    groups = [{"targets": addresses, "labels": {"namespace": NAMESPACE}}]
    (targets / f"{job}.json").write_text(json.dumps(groups))


@contextlib.contextmanager
def running(port: int, edges: list[str], workers: list[str]) -> Iterator[Prometheus]:
    """Prometheus on deploy/'s config and alert rules (copied beside the targets it reads)."""
    with tempfile.TemporaryDirectory(prefix="cohortsync-prometheus-") as tmp:
        directory = Path(tmp)
        for name in ("prometheus.yaml", "alerts.yaml"):
            shutil.copy(PROMETHEUS_DIR / name, directory / name)
        write_targets(directory, "edge", edges)
        write_targets(directory, "worker", workers)
        with (directory / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={directory / 'prometheus.yaml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            try:
                prometheus = Prometheus(f"http://127.0.0.1:{port}")
                _wait_ready(prometheus, proc, directory / "prometheus.log")
                yield prometheus
            finally:
                proc.terminate()
                proc.wait(timeout=30)


def _wait_ready(prometheus: Prometheus, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert proc.poll() is None, f"prometheus exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"prometheus not ready:\n{log.read_text()}"
        time.sleep(0.2)


def check_metrics(exposition: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics``: the exposition parses and follows Prometheus's naming rules."""
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
