"""``cohortsync-edge``: run the HTTP edge until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import msgspec
from aiohttp import web

from ingest.app import create_app
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
    except SettingsError as e:
        print(f"cohortsync-edge: {e}", file=sys.stderr)
        sys.exit(2)
    level = logging.getLevelName(settings.log_level.upper())
    if not isinstance(level, int):
        print(
            f"cohortsync-edge: {PREFIX}LOG_LEVEL: unknown level {settings.log_level!r}",
            file=sys.stderr,
        )
        sys.exit(2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info("edge starting on http://%s:%d", settings.http_host, settings.http_port)
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=None,
    )


if __name__ == "__main__":
    main()
