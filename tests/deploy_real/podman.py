"""Podman as make test-deploy runs it: as root with runc and cgroupfs (no systemd here), host
networking for builds, no default ulimits (deploy/podman/containers.conf), images from Debian."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from tests.deploy.deploy_support import DEPLOY, ROOT

CONTAINERS_CONF = DEPLOY / "podman" / "containers.conf"
# runc and cgroupfs come from CONTAINERS_CONF (podman-compose calls podman too).
PODMAN = ("podman",)
# Builds reach the package indexes through the host's network, whose TLS may be intercepted by a
# CA only the host trusts: its bundle is mounted read-only over the image's own, where pip
# (certifi on Debian, truststore on the official image) and apt look.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The base image: what the official python image gives deploy/Dockerfile, from Debian's packages.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPOSITORY = "localhost/cohortsync-base"
IMAGE = "localhost/cohortsync:test-deploy"
COMMAND_TIMEOUT_S = 900.0


def environ() -> dict[str, str]:
    return os.environ | {"CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Runs podman; a failure raises with podman's own output, so the report says what broke."""
    result = subprocess.run(
        [*PODMAN, *args],
        env=environ(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def content_tag(repository: str, *parts: str | bytes) -> str:
    """``repository:<hash>`` of what the image is made from: a change makes a new image."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return f"{repository}:{digest.hexdigest()[:16]}"


def base_image() -> tuple[str, float | None]:
    """The Debian base (mmdebstrap, then ``podman import``), made once per content hash: its
    tag, and the seconds making it took (None when it was there already)."""
    tag = content_tag(BASE_REPOSITORY, "minbase", BASE_SUITE, *BASE_PACKAGES)
    if image_exists(tag):
        return tag, None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cohortsync-base-") as tmp:
        tarball = Path(tmp) / "base.tar"
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(tarball),
            ],
            check=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        podman("import", "--change", 'CMD ["python3"]', str(tarball), tag)
    return tag, time.monotonic() - started


def build(
    containerfile: Path,
    tag: str,
    *,
    context: Path = ROOT,
    build_args: dict[str, str] | None = None,
) -> float:
    """``podman build``; returns the seconds it took."""
    args = ["build", "--network", "host", "--file", str(containerfile), "--tag", tag]
    args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    for name, value in (build_args or {}).items():
        args += ["--build-arg", f"{name}={value}"]
    started = time.monotonic()
    podman(*args, str(context))
    return time.monotonic() - started


def image_size_bytes(tag: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)


def remove_containers(*names: str) -> None:
    if names:
        podman("rm", "--force", "--time", "0", *names, check=False)
