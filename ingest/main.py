"""``cohortsync-edge``: run the HTTP edge until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from aiohttp import web

from core.scripts.upgrade import warn_if_pending
from ingest.app import create_app
from ingest.serve import SHUTDOWN_TIMEOUT_S as SHUTDOWN_TIMEOUT_S
from ingest.serve import ensure_fd_limit, serve
from ingest.state import SCRIPTS
from schemas import logs as log_format
from schemas.settings import Settings, SettingsError, help_epilog

log = logging.getLogger("cohortsync.edge")

# The settings this process reads, listed by --help with their descriptions.
USED_SETTINGS = (
    "database_url",
    "redis_url",
    "redis_ack_replicas",
    "redis_ack_timeout_ms",
    "http_host",
    "http_port",
    "ops_port",
    "request_read_timeout_s",
    "keepalive_timeout_s",
    "max_connections",
    "max_body_bytes",
    "max_backlog",
    "allowed_destination_hostnames",
    "account_id",
    "auth_cache_ttl_s",
    "audience_cache_ttl_s",
    "rate_limit_per_minute",
    "fleet_rate_limit_per_minute",
    "worker_capacity_per_second",
    "metrics_top_audiences",
    "queue_name",
    "log_level",
)


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="cohortsync-edge",
        description=(
            "Run the cohortsync HTTP edge: the Talon.One Integration API audience endpoints, "
            "the read API and health probes. Settings come from COHORTSYNC_* environment "
            "variables; migrate the database first (cohortsync-admin migrate)."
        ),
        epilog=help_epilog(USED_SETTINGS),
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
    app.on_startup.append(_warn_if_upgrade_pending)
    app.on_shutdown.append(_stopping)
    asyncio.run(serve(settings, app))
    log.info("edge stopped", extra={"event": "stop", "pid": os.getpid()})


async def _warn_if_upgrade_pending(app: web.Application) -> None:
    # After the pools opened (cleanup_ctx runs first): Redis may still hold the old key layout.
    await warn_if_pending(app[SCRIPTS].upgrade, log)


async def _stopping(app: web.Application) -> None:
    # The listener is closed by now; requests in flight get SHUTDOWN_TIMEOUT_S to finish.
    log.info("edge stopping: no new connections", extra={"event": "stopping"})


if __name__ == "__main__":
    main()
