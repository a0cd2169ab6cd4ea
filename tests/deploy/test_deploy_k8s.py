"""deploy/k8s/: kubernetes-validate on every object, and the wiring between them checked."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from ingest.main import SHUTDOWN_TIMEOUT_S
from tests.deploy.deploy_support import (
    CRD_GROUPS,
    DEPLOY,
    K8S,
    METRICS,
    Resource,
    container_port,
    containers,
    find,
    k8s_environment,
    k8s_resources,
    load_yaml,
    pod_spec,
    selects,
    worker_grace_s,
)

RESOURCES = k8s_resources()
# Oldest Kubernetes the manifests claim to support (preStop `sleep`), and the newest known.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
EDGE = "cohortsync-edge"
WORKER = "cohortsync-worker"
ENV = k8s_environment()
HTTP_PORT = int(ENV["COHORTSYNC_HTTP_PORT"])
OPS_PORT = int(ENV["COHORTSYNC_OPS_PORT"])
WORKER_PORT = int(ENV["COHORTSYNC_WORKER_METRICS_PORT"])


def pod_labels(deployment: str) -> dict[str, str]:
    labels: dict[str, str] = find("Deployment", deployment)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


@pytest.mark.parametrize("resource", [r for r in RESOURCES if r.group not in CRD_GROUPS], ids=str)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_passes_kubernetes_validate(resource: Resource, version: str) -> None:
    kubernetes_validate.validate(resource.doc, version, strict=True)


def test_kubernetes_validate_would_catch_an_unknown_field() -> None:
    doc = json.loads(json.dumps(find("Deployment", WORKER)))
    pod_spec(doc)["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


def test_manifests_are_namespace_agnostic_and_labelled() -> None:
    kinds = {r.kind for r in RESOURCES}
    assert {"ConfigMap", "Secret", "Deployment", "Service", "Job"} <= kinds
    assert {"PodDisruptionBudget", "ScaledObject", "HorizontalPodAutoscaler"} <= kinds
    for resource in RESOURCES:
        assert "namespace" not in resource.doc["metadata"], resource
        assert resource.doc["metadata"]["labels"]["app.kubernetes.io/name"] == "cohortsync"


def test_kustomization_applies_everything_but_the_hpa_alternative() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    top_level = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == top_level
    assert not any(entry.startswith("hpa/") for entry in listed), "KEDA and the HPA would fight"
    images = {i["name"] for i in kustomization["images"]}
    for resource in RESOURCES:
        if resource.kind in ("Deployment", "Job"):
            for container in containers(resource.doc):
                assert container["image"].split(":")[0] in images


@pytest.mark.parametrize(
    "resource", [r for r in RESOURCES if r.kind in ("Deployment", "Job")], ids=str
)
def test_pods_run_unprivileged_with_resources(resource: Resource) -> None:
    spec = pod_spec(resource.doc)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    for container in containers(resource.doc):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
        refs = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert refs == {"configMapRef": "cohortsync-config", "secretRef": "cohortsync-secrets"}


def test_edge_probes_service_and_grace() -> None:
    deployment = find("Deployment", EDGE)
    (edge,) = containers(deployment)
    assert edge["command"] == ["cohortsync-edge"]
    readiness, liveness = edge["readinessProbe"]["httpGet"], edge["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert container_port(edge, readiness["port"]) == HTTP_PORT
    assert container_port(edge, liveness["port"]) == HTTP_PORT
    pre_stop_s = edge["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace_s = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace_s > pre_stop_s + SHUTDOWN_TIMEOUT_S
    service = find("Service", EDGE)
    assert selects(service["spec"]["selector"], pod_labels(EDGE))
    for port in service["spec"]["ports"]:
        assert container_port(edge, port["targetPort"]) == HTTP_PORT
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(OPS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_edge_metrics_have_their_own_service_apart_from_the_public_one() -> None:
    assert OPS_PORT != HTTP_PORT
    (edge,) = containers(find("Deployment", EDGE))
    public, ops = find("Service", EDGE), find("Service", f"{EDGE}-ops")
    assert selects(ops["spec"]["selector"], pod_labels(EDGE))
    assert {container_port(edge, p["targetPort"]) for p in public["spec"]["ports"]} == {HTTP_PORT}
    assert {container_port(edge, p["targetPort"]) for p in ops["spec"]["ports"]} == {OPS_PORT}
    assert ops["spec"]["type"] == "ClusterIP"
    # The monitor scrapes the ops Service only: the public one (behind the ingress) has no
    # metrics now, and a selector matching both would scrape every pod twice.
    monitor = find("ServiceMonitor", EDGE)["spec"]
    assert selects(monitor["selector"]["matchLabels"], ops["metadata"]["labels"])
    assert not selects(monitor["selector"]["matchLabels"], public["metadata"]["labels"])


def test_worker_probes_and_grace() -> None:
    deployment = find("Deployment", WORKER)
    (worker,) = containers(deployment)
    assert worker["command"] == ["cohortsync-worker"]
    # Liveness must not restart a worker that waits out an outage: /livez, not /healthz.
    liveness = worker["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/livez"
    assert container_port(worker, liveness["port"]) == WORKER_PORT
    readiness = worker["readinessProbe"]["httpGet"]
    assert container_port(worker, readiness["port"]) == WORKER_PORT
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(WORKER_PORT)
    # Past its own grace the worker must still have time to exit before SIGKILL.
    grace_s = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace_s >= worker_grace_s(ENV) + 30
    assert grace_s > 30, "longer than Kubernetes' default"


def test_migrate_job_runs_the_migration_once() -> None:
    job = find("Job", "cohortsync-migrate")
    (migrate,) = containers(job)
    assert migrate["command"] == ["cohortsync-admin", "migrate"]
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"]["backoffLimit"] >= 1


def test_disruption_budgets_cover_edge_and_workers() -> None:
    budgets = [r.doc for r in RESOURCES if r.kind == "PodDisruptionBudget"]
    for deployment in (EDGE, WORKER):
        covering = [
            b
            for b in budgets
            if selects(b["spec"]["selector"]["matchLabels"], pod_labels(deployment))
        ]
        assert len(covering) == 1, deployment
        spec = covering[0]["spec"]
        replicas = find("Deployment", deployment)["spec"]["replicas"]
        # A budget that allows no disruption at all would block every node drain.
        allowed = spec.get("maxUnavailable", replicas - spec.get("minAvailable", replicas))
        assert allowed >= 1, deployment


def test_keda_scaled_object_scales_workers_on_demand_not_depth() -> None:
    # kubernetes-validate has no schema for KEDA's CRD: its required fields, checked here.
    scaled = find("ScaledObject", WORKER)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == WORKER
    assert target.get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["fallback"]["replicas"] >= spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    metadata = trigger["metadata"]
    assert metadata["serverAddress"].startswith("http")
    assert 0 < float(metadata["threshold"]) <= 1
    assert " ".join(metadata["query"].split()) == (
        "max(cohortsync_demand_changes_per_second)"
        " / max(cohortsync_worker_capacity_changes_per_second)"
    )


def test_hpa_alternative_scales_the_same_deployment_on_the_same_metric() -> None:
    hpa = find("HorizontalPodAutoscaler", WORKER)
    scaled = find("ScaledObject", WORKER)["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == WORKER
    assert hpa["spec"]["minReplicas"] == scaled["minReplicaCount"]
    assert hpa["spec"]["maxReplicas"] == scaled["maxReplicaCount"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "cohortsync_workers_needed"
    (adapter,) = load_yaml(DEPLOY / "prometheus" / "adapter-rules.yaml")
    (rule,) = adapter["rules"]["external"]
    assert rule["name"]["as"] == "cohortsync_workers_needed"
    assert rule["name"]["matches"].strip("^$") in METRICS
    assert "cohortsync_worker_capacity_changes_per_second" in rule["metricsQuery"]


def test_prometheus_monitors_select_the_pods_and_ports() -> None:
    # The Prometheus Operator's CRDs: required fields and the wiring to our objects.
    monitor: dict[str, Any] = find("ServiceMonitor", EDGE)
    service = find("Service", f"{EDGE}-ops")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    pods: dict[str, Any] = find("PodMonitor", WORKER)
    assert selects(pods["spec"]["selector"]["matchLabels"], pod_labels(WORKER))
    (worker,) = containers(find("Deployment", WORKER))
    for endpoint in pods["spec"]["podMetricsEndpoints"]:
        assert container_port(worker, endpoint["port"]) == WORKER_PORT
        assert endpoint["path"] == "/metrics"
