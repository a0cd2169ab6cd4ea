"""deploy/compose.yaml started with podman-compose on stand-ins for the registry's Postgres and
Redis images, built from Debian's packages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.deploy.deploy_support import COMPOSE
from tests.deploy_real import podman as pm

# From PyPI (dev extra): the version this was written against, whatever the system has.
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"
STANDINS = Path(__file__).resolve().parent / "standins"
HEALTHY_TIMEOUT_S = 120.0


def standin(name: str, base: str) -> str:
    """``localhost/cohortsync-standin-<name>:<hash>``, built once per content of its files."""
    files = sorted(STANDINS.glob(f"{name}*"))
    tag = pm.content_tag(
        f"localhost/cohortsync-standin-{name}", base, *(f.read_bytes() for f in files)
    )
    if not pm.image_exists(tag):
        pm.build(
            STANDINS / f"{name}.Containerfile", tag, context=STANDINS, build_args={"BASE": base}
        )
    return tag


class Compose:
    def __init__(self, project: str, variables: dict[str, str]) -> None:
        self.project = project
        self.variables = variables

    def __call__(self, *args: str, timeout_s: float = 300) -> str:
        command = [
            str(PODMAN_COMPOSE),
            "--project-name",
            self.project,
            "--file",
            str(COMPOSE),
            *args,
        ]
        result = subprocess.run(
            command,
            env=pm.environ() | self.variables,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        return result.stdout

    def container(self, service: str, number: int = 1) -> str:
        # podman-compose's naming: project_service_number.
        return f"{self.project}_{service}_{number}"

    def containers(self, *, running_only: bool) -> list[str]:
        args = [
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
        ]
        if not running_only:
            args.append("--all")
        return pm.podman(*args).stdout.split()

    def wait_healthy(self, container: str) -> None:
        """Runs the compose healthcheck until it passes: without systemd, Podman has no timer
        to run it, and podman-compose skips depends_on health conditions before Podman 4.6."""
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while pm.podman("healthcheck", "run", container, check=False).returncode != 0:
            if time.monotonic() > deadline:
                logs = pm.podman("logs", container, check=False)
                raise AssertionError(f"{container} never healthy:\n{logs.stdout}{logs.stderr}")
            time.sleep(1)

    def remove_everything(self) -> None:
        """What a failed run may have left: containers, pod, volumes, network."""
        names = self.containers(running_only=False)
        pm.remove_containers(*names)
        pm.podman("pod", "rm", "--force", f"pod_{self.project}", check=False)
        volumes = pm.podman(
            "volume",
            "ls",
            "--quiet",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
            check=False,
        )
        for volume in volumes.stdout.split():
            pm.podman("volume", "rm", "--force", volume, check=False)
        pm.podman("network", "rm", "--force", f"{self.project}_default", check=False)


def project_name() -> str:
    return f"cohortsync-deploytest-{os.getpid()}"
