"""The image itself: who it runs as, its console scripts, a migration of the machine's Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.migrations import pending
from tests.deploy_real.podman import podman

pytestmark = pytest.mark.deploy


def test_image_runs_as_a_non_root_user(image: str) -> None:
    configured = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert configured == "10001:10001"
    uid = podman("run", "--rm", image, "id", "-u").stdout.strip()
    assert uid == "10001"


def test_every_console_script_answers_help(image: str) -> None:
    for script in ("cohortsync-edge", "cohortsync-worker", "cohortsync-admin"):
        shown = podman("run", "--rm", image, script, "--help").stdout
        assert shown.startswith(f"usage: {script}"), shown


@pytest.fixture
async def empty_database(services: tuple[str, str]) -> AsyncIterator[str]:
    """A database of its own on the machine's Postgres, never migrated."""
    admin_url = services[0]
    name = f"cohortsync_deploy_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_migrate_against_the_machines_postgres(image: str, empty_database: str) -> None:
    def migrate() -> str:
        env = f"COHORTSYNC_DATABASE_URL={empty_database}"
        run = ("run", "--rm", "--network", "host", "--env", env, image)
        return podman(*run, "cohortsync-admin", "migrate").stdout

    conn = await asyncpg.connect(empty_database)
    try:
        assert await pending(conn)
        assert "applied migrations" in migrate()
        assert await pending(conn) == []
        assert "is up to date" in migrate()
    finally:
        await conn.close()
