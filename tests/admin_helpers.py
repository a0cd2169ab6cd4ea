"""Running ``cohortsync-admin`` as operators run it: a subprocess with its own environment."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable
from typing import Protocol

import msgspec


class Run(msgspec.Struct):
    code: int
    out: str
    err: str


class Admin(Protocol):
    def __call__(self, *args: str, **env: str) -> Awaitable[Run]: ...


def admin_runner(database_url: str, redis_url: str) -> Admin:
    """Runs the command with only these ``COHORTSYNC_*`` settings (plus any given)."""

    async def run(*args: str, **env: str) -> Run:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("COHORTSYNC_")}
        environ |= {"COHORTSYNC_DATABASE_URL": database_url, "COHORTSYNC_REDIS_URL": redis_url}
        environ |= env
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "admin.main",
            *args,
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())

    return run
