"""Running the edge's listeners: the public port and, when set, the operations port, each with its
connection bounds, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import resource
import signal

from aiohttp import web

from ingest.app import DB_POOL_MAX, create_ops_app
from ingest.bodies import MAX_REQUEST_LINE_BYTES
from ingest.connections import CONNECTIONS, Connections
from schemas.settings import PREFIX, Settings, SettingsError

# In-flight requests get this long to finish after SIGTERM (under Kubernetes' default 30 s grace).
SHUTDOWN_TIMEOUT_S = 20.0
# Descriptors besides the connections: listeners, Postgres pool, logs, the interpreter's own.
FD_HEADROOM = 64 + DB_POOL_MAX


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with every accepted connection behind a ``Guard``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, bounds: Connections) -> None:
        super().__init__(runner, host, port)
        self._bounds = bounds

    async def start(self) -> None:
        # TCPSite.start with another protocol factory; BaseSite.start registers the site.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        bounds = self._bounds
        self._server = await asyncio.get_running_loop().create_server(
            lambda: bounds.protocol(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def ensure_fd_limit(settings: Settings) -> int:
    """Raise this process's open-file limit to what ``max_connections`` needs (a client socket
    and, while its request runs, a Redis connection each, on every listener); the limit now.
    ``SettingsError`` when the hard limit is below that."""
    listeners = 2 if settings.ops_port else 1
    needed = settings.max_connections * (listeners + 1) + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SettingsError(
            f"{PREFIX}MAX_CONNECTIONS: {settings.max_connections} connections need about "
            f"{needed} file descriptors; this process may open {hard} (ulimit -Hn). Lower the "
            "setting or raise the limit."
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


async def serve(settings: Settings, public: web.Application) -> None:
    """Serve ``public`` (and the ops app on ``settings.ops_port``) until SIGTERM or SIGINT, then
    stop accepting, give requests in flight ``SHUTDOWN_TIMEOUT_S`` and close."""
    apps = [(public, settings.http_port)]
    if settings.ops_port:
        apps.append((create_ops_app(settings, public), settings.ops_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runners: list[web.AppRunner] = []
    try:
        for app, port in apps:
            runner = web.AppRunner(
                app,
                access_log=None,
                keepalive_timeout=settings.keepalive_timeout_s,
                shutdown_timeout=SHUTDOWN_TIMEOUT_S,
                max_line_size=MAX_REQUEST_LINE_BYTES,
            )
            await runner.setup()
            runners.append(runner)
            await GuardedSite(runner, settings.http_host, port, app[CONNECTIONS]).start()
        await stop.wait()
    finally:
        # The ops app borrows the public app's pools: it stops first.
        for runner in reversed(runners):
            await runner.cleanup()
