"""cohortsync edge and worker replicas as separate processes, as production runs them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import redis.asyncio as aioredis

from schemas.keys import Keys
from tests.support import process as process_support
from tests.support.process import health_keys

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 30.0


def environment(database_url: str, redis_url: str, **settings: str | int) -> dict[str, str]:
    """The process environment with only these ``COHORTSYNC_*`` settings.

    Replicas on one host serve no metrics port (they would all want the same one) and log
    warnings only, unless ``settings`` say otherwise.
    """
    defaults: dict[str, str | int] = {"log_level": "WARNING", "worker_metrics_port": 0}
    return process_support.environment(
        **(defaults | settings), database_url=database_url, redis_url=redis_url
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """One child process; its stderr goes to a file, so a chatty child never blocks on a pipe."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean anything up."""
        if self.running:
            self.process.kill()

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited after ``STOP_TIMEOUT_S``; the exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
        return await self.process.wait()


class Children:
    """Starts children and stops every one still running when the ``async with`` block ends."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._started: list[Child] = []

    async def start(self, name: str, env: Mapping[str, str], *argv: str) -> Child:
        log_path = self._log_dir / f"{name}-{len(self._started)}.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                env=dict(env),
                cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        child = Child(name, process, log_path)
        self._started.append(child)
        return child

    async def worker(self, env: Mapping[str, str]) -> Child:
        """A ``cohortsync-worker`` replica."""
        return await self.start("worker", env, "-m", "worker.main")

    async def stop_all(self) -> None:
        await asyncio.gather(*(c.stop() for c in self._started if c.running))


@contextlib.asynccontextmanager
async def children(log_dir: Path | None = None) -> AsyncIterator[Children]:
    """Children whose logs go to ``log_dir`` (a temporary directory when not given)."""
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-procs-")))
        group = Children(log_dir)
        try:
            yield group
        finally:
            await group.stop_all()


async def wait_for_workers(redis: aioredis.Redis, keys: Keys, workers: list[Child]) -> None:
    """Wait until every worker refreshed its health key, i.e. its arq loop runs; a worker that
    exits meanwhile raises ``RuntimeError`` with its log."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while (
            names := await health_keys(redis, keys, [w.pid for w in workers])
        ) is None or await redis.exists(*names) < len(names):
            for w in workers:
                if not w.running:
                    raise RuntimeError(f"{w.name} {w.pid} exited at start-up:\n{w.log()}")
            await asyncio.sleep(0.05)


async def until(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.05
) -> None:
    """Poll ``check`` until it is true; ``TimeoutError`` after ``timeout_s``."""
    # Polling, not an Event: what is awaited happens in other processes.
    async with asyncio.timeout(timeout_s):
        while True:
            if await check():
                return
            await asyncio.sleep(interval_s)
