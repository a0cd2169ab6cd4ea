"""make test-deploy: the image built from deploy/Dockerfile on a Debian base, once per session;
the figures an operator asks for (image size, build times, what ran) printed at the end."""

from __future__ import annotations

import pytest

from tests.deploy_real import podman
from tests.deploy_support import DOCKERFILE

# name -> figure, printed after the tests in the order they were recorded.
FIGURES: dict[str, str] = {}


def record(name: str, figure: str) -> None:
    FIGURES[name] = figure


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("deploy figures")
        for name, figure in FIGURES.items():
            terminalreporter.write_line(f"{name}: {figure}")


@pytest.fixture(scope="session")
def image() -> str:
    """deploy/Dockerfile built twice: from nothing (every step run: a cached layer cannot hide a
    broken one), then again from its cache, as a rebuild after no change."""
    base = podman.base_image()
    args = {"PYTHON_IMAGE": base}
    cold_s = podman.build(DOCKERFILE, podman.IMAGE, build_args=args, no_cache=True)
    cached_s = podman.build(DOCKERFILE, podman.IMAGE, build_args=args)
    size = podman.image_size_bytes(podman.IMAGE)
    record("base image", base)
    record("image build, no cache", f"{cold_s:.1f} s")
    record("image build, cached", f"{cached_s:.1f} s")
    base_mb = podman.image_size_bytes(base) / 1e6
    record("image size", f"{size / 1e6:.0f} MB ({size} bytes; the base alone {base_mb:.0f} MB)")
    return podman.IMAGE
