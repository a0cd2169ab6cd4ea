"""``cohortsync-edge``: run the HTTP edge until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import web

from ingest.app import create_app
from ingest.serve import SHUTDOWN_TIMEOUT_S as SHUTDOWN_TIMEOUT_S
from ingest.serve import ensure_fd_limit, serve
from schemas import logs as log_format
from schemas.settings import PREFIX, Settings, SettingsError

log = logging.getLogger("cohortsync.edge")

# The settings this process reads, for --help.
USED_SETTINGS = {
    "database_url": "Postgres: API keys, audiences, memberships",
    "redis_url": "Redis: the backlogs changes are accepted into",
    "http_host": "address the edge listens on",
    "http_port": "port of the APIs and probes",
    "ops_port": "/metrics, /dashboard, probes and /v1/status on their own port; 0 serves "
    "/metrics and /dashboard on the http port",
    "request_read_timeout_s": "a request (headers and body) must arrive whole this long after "
    "its first byte, else its connection is closed",
    "keepalive_timeout_s": "an idle keep-alive connection is closed after this long",
    "max_connections": "open connections per listener; past it a client is answered 503 "
    "(Retry-After) and closed",
    "max_body_bytes": "largest request body read; larger ones are answered 413",
    "max_backlog": "queued changes past which requests are answered 429",
    "allowed_destination_hostnames": "destination-hostname values the /cdp/ endpoints answer "
    "for (comma-separated; empty: any)",
    "account_id": "the Talon.One account id audiences report",
    "auth_cache_ttl_s": "how long an API key lookup is trusted",
    "audience_cache_ttl_s": "how long an audience lookup is trusted",
    "rate_limit_per_minute": "the rate assumed for ETAs and Retry-After until the workers "
    "publish the one they enforce",
    "queue_name": "arq queue name",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}


def _parser() -> argparse.ArgumentParser:
    defaults = Settings()
    lines = [
        f"  {PREFIX}{name.upper()}  {text} (default: {getattr(defaults, name)})"
        for name, text in USED_SETTINGS.items()
    ]
    return argparse.ArgumentParser(
        prog="cohortsync-edge",
        description=(
            "Run the cohortsync HTTP edge: the Talon.One Integration API audience endpoints, "
            "the read API and health probes. Settings come from COHORTSYNC_* environment "
            "variables; migrate the database first (cohortsync-admin migrate)."
        ),
        epilog="configuration (environment variables, read once at start):\n" + "\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> None:
    _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        level = settings.log_level_number()
        fd_limit = ensure_fd_limit(settings)
    except SettingsError as e:
        print(f"cohortsync-edge: {e}", file=sys.stderr)
        sys.exit(2)
    log_format.configure(level)
    ops = f", operations on port {settings.ops_port}" if settings.ops_port else ""
    log.info(
        "edge starting on http://%s:%d%s",
        settings.http_host,
        settings.http_port,
        ops,
        extra={"event": "start", "pid": os.getpid(), "fd_limit": fd_limit},
    )
    app = create_app(settings)
    app.on_shutdown.append(_stopping)
    asyncio.run(serve(settings, app))
    log.info("edge stopped", extra={"event": "stop", "pid": os.getpid()})


async def _stopping(app: web.Application) -> None:
    # The listener is closed by now; requests in flight get SHUTDOWN_TIMEOUT_S to finish.
    log.info("edge stopping: no new connections", extra={"event": "stopping"})


if __name__ == "__main__":
    main()
