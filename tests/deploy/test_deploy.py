"""deploy/ checked by the tools operators would run, and against what the code declares."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ingest.main import SHUTDOWN_TIMEOUT_S
from schemas.settings import PREFIX, Settings
from tests.deploy.deploy_support import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    GRAFANA,
    HISTOGRAMS,
    K8S,
    METRICS,
    QUEUE_STATES,
    ROOT,
    YAMLLINT_CONFIG,
    compose_environment,
    console_scripts,
    containers,
    dockerfile_args,
    dockerfile_commands,
    dockerfile_stages,
    dockerignore_includes,
    files_under,
    k8s_environment,
    k8s_resources,
    load_yaml,
    pyproject,
    worker_grace_s,
)

BIN = Path(sys.executable).parent
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
RESOURCES = k8s_resources()
SETTINGS_VARIABLES = {PREFIX + f.name.upper() for f in msgspec.structs.fields(Settings)}
COMPOSE_DOC: dict[str, Any] = load_yaml(COMPOSE)[0]
SERVICES: dict[str, Any] = COMPOSE_DOC["services"]


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)


# --- the tools ------------------------------------------------------------------------------


def test_yamllint_passes_every_yaml_file() -> None:
    assert len(YAML_FILES) >= 8
    result = run(sys.executable, "-m", "yamllint", "--strict", "-c", YAMLLINT_CONFIG, *YAML_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_would_catch_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("---\nkey: value\nkey: again\n")
    result = run(sys.executable, "-m", "yamllint", "--strict", "-c", YAMLLINT_CONFIG, bad)
    assert result.returncode != 0
    assert "duplication of key" in result.stdout


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(BIN / "hadolint", "--failure-threshold", "info", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /src && pip install .\n")
    result = run(BIN / "hadolint", bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


# --- the image --------------------------------------------------------------------------------


def test_image_is_multi_stage_on_slim_python_311() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    args = dockerfile_args()
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0].value[0])
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), image


def test_final_stage_installs_the_built_wheel_into_a_venv_without_compilers() -> None:
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    build_name = build[0].value[-1]
    assert any("pip wheel" in c.value[0] for c in build if c.cmd == "RUN")
    runs = [c for c in final if c.cmd == "RUN"]
    install = [c for c in runs if "install" in c.value[0] and "/opt/venv" in c.value[0]]
    assert install, "the final stage installs into /opt/venv"
    assert any(f"from={build_name}" in flag for flag in install[0].flags)
    assert "--no-index" in install[0].value[0]  # only the wheels built in the first stage
    final_text = " ".join(" ".join(c.value) for c in final)
    for compiler in ("gcc", "build-essential", "g++", "clang", "apt-get install"):
        assert compiler not in final_text


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = [c.value[0] for c in dockerfile_stages()[-1] if c.cmd == "USER"]
    assert users
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_image_command_and_healthcheck() -> None:
    final = dockerfile_stages()[-1]
    cmd = [c for c in final if c.cmd == "CMD"][-1]
    assert cmd.json, "exec form, so the console script is PID 1 and receives SIGTERM"
    assert list(cmd.value) == ["cohortsync-edge"]
    assert not [c for c in final if c.cmd == "ENTRYPOINT"], "compose and k8s set the command"
    healthcheck = [c for c in final if c.cmd == "HEALTHCHECK"][-1]
    assert healthcheck.value[0] == "CMD"
    assert "/healthz" in " ".join(healthcheck.value)


def test_image_copies_every_package_and_the_build_context_keeps_them() -> None:
    sources = [
        source
        for c in dockerfile_commands()
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
        for source in c.value[:-1]
    ]
    project = pyproject()
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = ["pyproject.toml", project["project"]["readme"], *packages]
    for path in needed:
        assert any(s == path or s.startswith(path + "/") for s in sources), path
    for source in sources:
        files = list(files_under(source))
        assert files, f"COPY {source}: nothing there"
        for file in files:
            assert dockerignore_includes(file), f".dockerignore drops {file}"
    for private in (".git/HEAD", ".venv/pyvenv.cfg", "tests/conftest.py", "schemas/__pycache__/x"):
        assert not dockerignore_includes(private), private


# --- commands and variables -------------------------------------------------------------------


def _compose_commands() -> list[list[str]]:
    image = SERVICES["edge"]["image"]
    commands = []
    for service in SERVICES.values():
        if service.get("image") != image:
            continue
        for key in ("entrypoint", "command"):
            if key in service:
                value = service[key]
                commands.append(shlex.split(value) if isinstance(value, str) else list(value))
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "cohortsync-worker"]:
            commands.append(test[1:])
    return commands


def _k8s_commands() -> list[list[str]]:
    commands = []
    for resource in RESOURCES:
        if resource.kind not in ("Deployment", "Job"):
            continue
        for container in containers(resource.doc):
            commands.append([*container.get("command", []), *container.get("args", [])])
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if "exec" in container.get(probe, {}):
                    commands.append(container[probe]["exec"]["command"])
    return commands


ALL_COMMANDS = (
    [[*c.value] for c in dockerfile_commands() if c.cmd in ("CMD", "ENTRYPOINT")]
    + _compose_commands()
    + _k8s_commands()
)


def _entry_point(script: str) -> Callable[[list[str]], Any]:
    module, _, function = console_scripts()[script].partition(":")
    entry: Callable[[list[str]], Any] = getattr(importlib.import_module(module), function)
    return entry


def _help(script: str, words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        _entry_point(script)([*words, "--help"])
    assert exited.value.code == 0, f"{script} {' '.join(words)} --help"
    return capsys.readouterr().out


def test_every_command_is_a_declared_console_script_with_known_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What the image, compose and k8s run are the console scripts the tests run, as parsed."""
    scripts = console_scripts()
    assert set(scripts) == {"cohortsync-edge", "cohortsync-worker", "cohortsync-admin"}
    commands = {tuple(c) for c in ALL_COMMANDS}
    assert ("cohortsync-admin", "migrate") in commands
    assert ("cohortsync-worker", "--check") in commands
    for script, *rest in sorted(commands):
        assert script in scripts, f"{script} is not in [project.scripts]"
        words = [w for w in rest if not w.startswith("-")]
        # --help on the subcommand exits 0 only when the subcommand exists.
        text = _help(script, words, capsys)
        for option in (w for w in rest if w.startswith("-")):
            assert re.search(rf"(^|\s){re.escape(option)}\b", text), f"{script}: {option}"


def test_every_cohortsync_variable_is_a_setting() -> None:
    files = [DOCKERFILE, COMPOSE, DEPLOY / "README.md", *sorted(K8S.rglob("*.yaml"))]
    used = {
        name
        for path in files
        for name in re.findall(rf"{PREFIX}[A-Z0-9_]*[A-Z0-9]", path.read_text())
    }
    assert used - SETTINGS_VARIABLES == set()
    assert {"COHORTSYNC_DATABASE_URL", "COHORTSYNC_REDIS_URL"} <= used


@pytest.mark.parametrize("environment", [compose_environment, k8s_environment])
def test_configured_values_make_valid_settings(
    environment: Callable[[], dict[str, str]],
) -> None:
    env = environment()
    assert set(env) <= SETTINGS_VARIABLES
    settings = Settings.from_env(env)
    assert settings.http_port == 8080
    assert settings.worker_metrics_port == 9090
    assert settings.ops_port == 9091


# --- compose ----------------------------------------------------------------------------------


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(number) * units[unit]
    return total


def test_compose_has_the_services_and_the_worker_replicas() -> None:
    assert set(SERVICES) == {"postgres", "redis", "migrate", "edge", "worker"}
    assert SERVICES["worker"]["deploy"]["replicas"] == 3
    assert "container_name" not in SERVICES["worker"], "replicas need generated names"
    for name in ("migrate", "edge", "worker"):
        assert SERVICES[name]["image"] == SERVICES["edge"]["image"]
    assert SERVICES["edge"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (COMPOSE.parent / SERVICES["edge"]["build"]["context"]).resolve() == ROOT


def test_compose_redis_persists_with_aof_on_a_volume() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    volumes = COMPOSE_DOC["volumes"]
    assert any(v.split(":")[0] in volumes and v.split(":")[1] == "/data" for v in redis["volumes"])
    postgres_volumes = SERVICES["postgres"]["volumes"]
    assert any(v.split(":")[0] in volumes for v in postgres_volumes)


def test_compose_starts_edge_and_workers_after_a_successful_migration() -> None:
    assert SERVICES["migrate"]["command"] == ["cohortsync-admin", "migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("edge", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"


def test_compose_publishes_the_edge_ops_port_on_this_host_only() -> None:
    settings = Settings.from_env(compose_environment())
    published = {p.rsplit(":", 1)[1]: p.rsplit(":", 1)[0] for p in SERVICES["edge"]["ports"]}
    # The public port on every interface, metrics and the dashboard on loopback.
    assert not published[str(settings.http_port)].startswith("127.0.0.1")
    assert published[str(settings.ops_port)].startswith("127.0.0.1:")


def test_compose_healthchecks_and_grace_periods() -> None:
    for name in ("postgres", "redis", "edge", "worker"):
        assert SERVICES[name]["healthcheck"]["test"][0] == "CMD", name
    assert SERVICES["worker"]["healthcheck"]["test"] == ["CMD", "cohortsync-worker", "--check"]
    assert "/readyz" in " ".join(SERVICES["edge"]["healthcheck"]["test"])
    assert ":8080/readyz" in " ".join(SERVICES["edge"]["healthcheck"]["test"])
    assert _seconds(SERVICES["edge"]["stop_grace_period"]) > SHUTDOWN_TIMEOUT_S
    worker_stop_s = _seconds(SERVICES["worker"]["stop_grace_period"])
    assert worker_stop_s >= worker_grace_s(compose_environment()) + 30


# --- Grafana ----------------------------------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _expressions() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


def _metric(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in HISTOGRAMS:
            return base
    return name


def test_grafana_dashboard_parses_and_its_panels_are_distinct() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "cohortsync"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in panels}
    for wanted in ("Queue depth by state", "Applied rate vs configured limit", "Live workers"):
        assert wanted in titles
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}


def test_grafana_queries_only_the_exported_metrics_and_all_of_them() -> None:
    expressions = _expressions()
    used = {_metric(m) for e in expressions for m in re.findall(r"cohortsync_\w+", e)}
    assert used - set(METRICS) == set()
    assert set(METRICS) - used == set()
    for expression in expressions:
        # Histograms are queried through their buckets, never as a bare series.
        for name in re.findall(r"cohortsync_\w+", expression):
            assert name not in HISTOGRAMS, expression
        for name, matchers in re.findall(r"(cohortsync_\w+)\{([^}]*)\}", expression):
            for label, value in re.findall(r"(\w+)\s*=~?\s*\"([^\"]*)\"", matchers):
                assert label in METRICS[_metric(name)], expression
                if label == "state":
                    assert value in QUEUE_STATES, expression
        for labels in re.findall(r"by \(([^)]*)\)", expression):
            names = {label.strip() for label in labels.split(",")} - {"le"}
            queried = {_metric(m) for m in re.findall(r"cohortsync_\w+", expression)}
            assert names <= set().union(*(METRICS[m] for m in queried)), expression
