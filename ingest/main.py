"""``cohortsync-edge``: run the HTTP edge until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import msgspec
from aiohttp import web

from ingest.app import create_app
from schemas import logs as log_format
from schemas.settings import PREFIX, Settings, SettingsError

log = logging.getLogger("cohortsync.edge")

# In-flight requests get this long to finish after SIGTERM (under Kubernetes' default 30 s grace).
SHUTDOWN_TIMEOUT_S = 20.0


def _describe_settings() -> str:
    defaults = Settings()
    lines = ["configuration (environment variables, read once at start):"]
    for field in msgspec.structs.fields(Settings):
        default = getattr(defaults, field.name)
        lines.append(f"  {PREFIX + field.name.upper():<36} default {default!r}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="cohortsync-edge",
        description=(
            "Run the cohortsync HTTP edge: the Talon.One Integration API audience endpoints, "
            "the read API and health probes. Settings come from COHORTSYNC_* environment "
            "variables; migrate the database first (cohortsync-admin migrate)."
        ),
        epilog=_describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> None:
    _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        level = settings.log_level_number()
    except SettingsError as e:
        print(f"cohortsync-edge: {e}", file=sys.stderr)
        sys.exit(2)
    log_format.configure(level)
    log.info(
        "edge starting on http://%s:%d",
        settings.http_host,
        settings.http_port,
        extra={"event": "start", "pid": os.getpid()},
    )
    app = create_app(settings)
    app.on_shutdown.append(_stopping)
    # Every request is logged once, by ingest.logs, with its request id: no access log.
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=None,
        access_log=None,
    )
    log.info("edge stopped", extra={"event": "stop", "pid": os.getpid()})


async def _stopping(app: web.Application) -> None:
    # The listener is closed by now; requests in flight get SHUTDOWN_TIMEOUT_S to finish.
    log.info("edge stopping: no new connections", extra={"event": "stopping"})


if __name__ == "__main__":
    main()
