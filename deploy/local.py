"""``make run``: the edge and two workers on this machine, on embedded Postgres/Redis if need be."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import aiohttp

from admin.api_keys import create_key
from admin.connections import describe_url
from admin.errors import explain
from core.migrations import migrate
from deploy import embedded
from schemas.settings import Settings, SettingsError

PROG = "python -m deploy.local"
WORKERS = 2
# Longer than the edge gives in-flight requests after SIGTERM (ingest.main).
STOP_GRACE_S = 25.0
READY_TIMEOUT_S = 60.0

DESCRIPTION = f"""\
Run cohortsync on this machine: the HTTP edge and {WORKERS} workers, until Ctrl-C.

Postgres: COHORTSYNC_DATABASE_URL when set, else an embedded server whose data lives in
DATA_DIR/pg and persists between runs. Redis: COHORTSYNC_REDIS_URL when set, else an embedded
redis-server whose append-only file lives in DATA_DIR/redis. Then it applies the schema
migrations, creates a new API key named "local", starts the edge (python -m ingest.main, what
cohortsync-edge runs) on COHORTSYNC_HTTP_PORT (default 8080; 0 picks a free port; metrics and
the dashboard on COHORTSYNC_OPS_PORT when that is set) and {WORKERS}
workers (python -m worker.main, what cohortsync-worker runs; worker N serves /healthz and
/metrics on COHORTSYNC_WORKER_METRICS_PORT + N - 1, default 9090), waits until the edge answers
/readyz, and prints on stdout the edge URL, the key, and curl commands that create an audience,
add a member and read the members back. The edge's and workers' logs go to stderr. Every other
COHORTSYNC_* variable is passed on to them (see README.md).

Ctrl-C or SIGTERM stops the edge and workers (SIGTERM, then SIGKILL after {STOP_GRACE_S:g} s),
then the embedded servers, and exits 0. When the edge or a worker exits by itself, the rest is
stopped and the exit code is 1. A bad COHORTSYNC_* value exits 2, naming the variable.
"""


class ChildExited(Exception):
    def __init__(self, name: str, code: int) -> None:
        super().__init__(f"{name} exited unexpectedly with code {code}")


@dataclass(frozen=True)
class Child:
    """One subprocess we started, with the name it is reported by."""

    name: str
    proc: asyncio.subprocess.Process


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as e:
        return _fail(str(e), code=2)
    # Until the event loop takes over signals, SIGTERM unwinds like Ctrl-C, so the embedded
    # servers started so far are stopped rather than orphaned.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    data_dir: Path = args.data_dir.resolve()
    try:
        with contextlib.ExitStack() as stack:
            env = dict(os.environ)
            services = {
                "Postgres": describe_url(settings.database_url),
                "Redis": describe_url(settings.redis_url),
            }
            if "COHORTSYNC_DATABASE_URL" not in env:
                services["Postgres"] = f"embedded, data in {data_dir / 'pg'}"
                _say(f"starting Postgres: {services['Postgres']}")
                env["COHORTSYNC_DATABASE_URL"] = stack.enter_context(
                    embedded.postgres(data_dir / "pg")
                )
            if "COHORTSYNC_REDIS_URL" not in env:
                services["Redis"] = f"embedded, data in {data_dir / 'redis'}"
                _say(f"starting Redis: {services['Redis']}")
                env["COHORTSYNC_REDIS_URL"] = stack.enter_context(
                    embedded.redis(data_dir / "redis", appendonly=True)
                )
            port = settings.http_port or embedded.free_port()
            if not _port_free(settings.http_host, port):
                return _fail(
                    f"COHORTSYNC_HTTP_PORT: port {port} on {settings.http_host} is already in "
                    f"use; stop what listens there or pick another port, e.g. "
                    f"COHORTSYNC_HTTP_PORT={port + 1} make run"
                )
            env["COHORTSYNC_HTTP_PORT"] = str(port)
            if settings.ops_port and not _port_free(settings.http_host, settings.ops_port):
                return _fail(
                    f"COHORTSYNC_OPS_PORT: port {settings.ops_port} on {settings.http_host} is "
                    "already in use; stop what listens there or pick another port"
                )
            env["PYTHONUNBUFFERED"] = "1"
            settings = Settings.from_env(env)
            return asyncio.run(_run(settings, env, services))
    except embedded.EmbeddedError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        _say("interrupted")
        return 130


async def _run(settings: Settings, env: Mapping[str, str], services: Mapping[str, str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    try:
        applied = await migrate(settings.database_url, default_account_id=settings.account_id)
        if applied:
            _say(f"applied migrations {', '.join(map(str, applied))}")
        key = (await create_key(settings.database_url, "local")).key
    except Exception as e:
        message = explain(e, settings)
        if message is None:
            raise
        return _fail(message)
    if stop.is_set():
        return 0

    children = [await _spawn("edge", "ingest.main", env)]
    for n in range(1, WORKERS + 1):
        worker_env = {**env, "COHORTSYNC_WORKER_METRICS_PORT": str(_worker_port(settings, n))}
        children.append(await _spawn(f"worker-{n}", "worker.main", worker_env))
    host = _connectable(settings.http_host)
    url = f"http://{host}:{settings.http_port}"
    # Metrics and the dashboard: on the ops port when one is set (COHORTSYNC_OPS_PORT).
    ops_url = f"http://{host}:{settings.ops_port}" if settings.ops_port else url
    try:
        if not await _wait_ready(url, children, stop):
            return 0
        print(_banner(url, ops_url, key, services), flush=True)
        await _supervise(children, stop)
    except ChildExited as e:
        return _fail(f"{e}; stopping")
    except TimeoutError:
        return _fail(f"the edge did not answer {url}/readyz within {READY_TIMEOUT_S:g} s")
    finally:
        await _stop(children)
    _say("stopped")
    return 0


async def _spawn(name: str, module: str, env: Mapping[str, str]) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=dict(env),
        # Logs go to stderr so stdout carries only the banner.
        stdout=sys.stderr,
        # Own session: Ctrl-C reaches only us, and we stop the children in order.
        start_new_session=True,
    )
    return Child(name, proc)


async def _wait_ready(url: str, children: Sequence[Child], stop: asyncio.Event) -> bool:
    """True once the edge answers /readyz with 200; False when asked to stop first."""
    async with asyncio.timeout(READY_TIMEOUT_S), aiohttp.ClientSession() as http:
        while not stop.is_set():
            _raise_if_exited(children)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    return False


async def _supervise(children: Sequence[Child], stop: asyncio.Event) -> None:
    """Return when asked to stop; raise ChildExited when a child exits first."""
    waits = {asyncio.ensure_future(c.proc.wait()): c for c in children}
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [stopping, *waits]:
            task.cancel()
    if not stop.is_set():
        _raise_if_exited(children)


def _raise_if_exited(children: Sequence[Child]) -> None:
    for c in children:
        if c.proc.returncode is not None:
            raise ChildExited(c.name, c.proc.returncode)


async def _stop(children: Sequence[Child]) -> None:
    running = [c for c in children if c.proc.returncode is None]
    for c in running:
        with contextlib.suppress(ProcessLookupError):
            c.proc.terminate()
    for c in running:
        try:
            await asyncio.wait_for(c.proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            _say(f"{c.name} did not stop within {STOP_GRACE_S:g} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                c.proc.kill()
            await c.proc.wait()


def _banner(url: str, ops_url: str, key: str, services: Mapping[str, str]) -> str:
    auth = f"-H 'Authorization: ApiKey-v1 {key}'"
    json_body = "-H 'Content-Type: application/json'"
    member = (
        '{"data": [{"action": "add", "profileIntegrationId": "R195412", '
        '"audienceId": \'"$AUDIENCE"\'}]}'
    )
    ops_line = f"\n  ops:       {ops_url} (metrics, dashboard, probes)" if ops_url != url else ""
    return f"""
cohortsync is running: edge and {WORKERS} workers. Stop with Ctrl-C.

  edge:      {url}{ops_line}
  API key:   {key}
  dashboard: {ops_url}/dashboard#key={key}
  metrics:   {ops_url}/metrics (edge); workers on COHORTSYNC_WORKER_METRICS_PORT and up
  Postgres:  {services["Postgres"]}
  Redis:     {services["Redis"]}

Create an audience, add a member, read the members back (a worker applies the change first):

AUDIENCE=$(curl -sS -X POST {url}/v2/audiences {auth} {json_body} \\
  -d '{{"name": "Binge watchers"}}' \\
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -sS -X POST {url}/v2/customer_audiences {auth} {json_body} \\
  -d '{member}'
curl -sS {url}/v1/audiences/$AUDIENCE/memberships {auth}
"""


def _worker_port(settings: Settings, n: int) -> int:
    """Worker ``n``'s own /healthz and /metrics port: consecutive from
    COHORTSYNC_WORKER_METRICS_PORT, so two workers on one host never ask for the same port."""
    base = settings.worker_metrics_port
    return 0 if base == 0 else min(65535, base + n - 1)


def _connectable(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        # Like the edge's listener: a port left in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"cohortsync: {message}", file=sys.stderr, flush=True)


def _fail(message: str, code: int = 1) -> int:
    _say(message)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".local"),
        metavar="DATA_DIR",
        help="where embedded Postgres and Redis keep their data (default: ./.local)",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
