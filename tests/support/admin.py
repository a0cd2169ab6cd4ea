"""Running ``cohortsync-admin``: its ``main`` in-process, or its console script as a process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

from admin.main import main
from tests.support.process import environment

# What `pip install` made of [project.scripts] in pyproject.toml.
CONSOLE_SCRIPT = Path(sys.executable).with_name("cohortsync-admin")


class Run(msgspec.Struct):
    code: int
    out: str
    err: str


class Admin(Protocol):
    def __call__(self, *args: str, **env: str) -> Awaitable[Run]: ...


def run_main(argv: Sequence[str], environ: Mapping[str, str]) -> Run:
    """``main(argv, environ)`` with its stdout, stderr and exit code, as a shell would see them.

    Runs in a thread of its own (``main`` runs its own event loop), so not beside another
    ``run_main``: stdout and stderr are the process's.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv, environ)
        except SystemExit as e:  # argparse: --help, a usage error
            code = e.code if isinstance(e.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


def admin_runner(database_url: str, redis_url: str) -> Admin:
    """Runs a command in-process with only these ``COHORTSYNC_*`` settings (plus any given)."""

    async def run(*args: str, **env: str) -> Run:
        environ = environment(database_url=database_url, redis_url=redis_url) | env
        return await asyncio.to_thread(run_main, args, environ)

    return run


async def run_console_script(*args: str, env: Mapping[str, str]) -> Run:
    """The installed ``cohortsync-admin`` as a process, its stdout and stderr pipes."""
    proc = await asyncio.create_subprocess_exec(
        CONSOLE_SCRIPT,
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())
