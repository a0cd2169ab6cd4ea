"""make test-deploy: the image built from deploy/Dockerfile on a Debian base, once per session;
the figures an operator asks for (image size, build times, what ran) printed at the end."""

from __future__ import annotations

import re

import pytest

from tests.deploy.deploy_support import DOCKERFILE
from tests.deploy_real import podman

# name -> figure, printed after the tests in the order they were recorded.
FIGURES: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Only an -m naming ``deploy`` runs these: ``pytest -m "not system"`` builds no image."""
    if re.search(r"\bdeploy\b", config.option.markexpr):
        return
    deploy = [item for item in items if item.get_closest_marker("deploy")]
    if deploy:
        config.hook.pytest_deselected(items=deploy)
        items[:] = [item for item in items if not item.get_closest_marker("deploy")]


def record(name: str, figure: str) -> None:
    FIGURES[name] = figure


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("deploy figures")
        for name, figure in FIGURES.items():
            terminalreporter.write_line(f"{name}: {figure}")


@pytest.fixture(scope="session")
def base() -> str:
    tag, made_s = podman.base_image()
    record("base image", f"{tag}, " + (f"made in {made_s:.1f} s" if made_s else "cached"))
    return tag


@pytest.fixture(scope="session")
def image(base: str) -> str:
    """deploy/Dockerfile built on the Debian base, then built again: the second build, with
    nothing changed, shows what a rebuild from the layer cache costs. The first is cold when
    the base was just made (no layer can be reused), otherwise it reuses earlier runs' layers
    for whatever did not change (`podman image prune` reclaims the ones left behind)."""
    first_s = podman.build(DOCKERFILE, podman.IMAGE, build_args={"PYTHON_IMAGE": base})
    cached_s = podman.build(DOCKERFILE, podman.IMAGE, build_args={"PYTHON_IMAGE": base})
    size = podman.image_size_bytes(podman.IMAGE)
    base_mb = podman.image_size_bytes(base) / 1e6
    record("image build", f"{first_s:.1f} s")
    record("image rebuild, nothing changed", f"{cached_s:.1f} s")
    record("image size", f"{size / 1e6:.0f} MB ({size} bytes; the base alone {base_mb:.0f} MB)")
    return podman.IMAGE
