"""``cohortsync-admin``: migrate, manage API keys, set the shared rate, show the queue."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from admin import api_keys, deadletters, rate, simulate, status, tenants
from admin.connections import describe_url, redis_client, scripts
from admin.errors import AdminError, explain
from admin.output import PROG
from admin.redis_upgrade import upgrade_redis
from core.migrations import migrate
from schemas.apikeys import SCOPES
from schemas.settings import Settings, SettingsError
from schemas.status import DEFAULT_STATUS_PAGE_SIZE, MAX_STATUS_PAGE_SIZE


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = await migrate(settings.database_url, default_account_id=settings.account_id)
    where = describe_url(settings.database_url)
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))} to {where}")
    else:
        print(f"{where} is up to date")
    client = redis_client(settings.redis_url)
    try:
        own = scripts(client, settings)
        moved = await upgrade_redis(own)
    finally:
        await client.aclose()
    for line in moved.lines(own.keys.tag):
        print(line)
    return 0


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
COMMANDS: dict[str, Command] = {
    "migrate": _migrate,
    "tenant": tenants.command,
    "create-key": api_keys.create_command,
    "revoke-key": api_keys.revoke_command,
    "list-keys": api_keys.list_command,
    "set-rate": rate.command,
    "status": status.command,
    "dead-letters": deadletters.command,
    "simulate": simulate.command,
}


def _page_size(text: str) -> int:
    value = _non_negative(text)
    if not 1 <= value <= MAX_STATUS_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{text} is not from 1 to {MAX_STATUS_PAGE_SIZE}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate cohortsync: schema, tenants, API keys, the shared rate limit, "
        "queue status, a simulated Amplitude sync.",
        epilog="Connection settings come from COHORTSYNC_DATABASE_URL and COHORTSYNC_REDIS_URL "
        "(see README.md for every COHORTSYNC_* variable).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "migrate",
        help="apply pending database migrations and move Redis keys of an older layout",
        description="Apply every schema migration the database has not applied yet, then move "
        "what Redis holds in the key layout before namespaces (queued changes, jobs, dead "
        "letters, counters) under COHORTSYNC_QUEUE_NAME's namespace. Safe to run from several "
        "processes at once, to interrupt and to repeat.",
    )
    tenants.add_parser(sub)
    p = sub.add_parser(
        "create-key",
        help="create an API key and print it once",
        description="Create an API key for the Authorization: ApiKey-v1 <key> header, for one "
        "tenant: it sees only that tenant's audiences and profiles. The key is printed once "
        "and only its SHA-256 hash is stored. When stdout is not a terminal, stdout holds only "
        "the key, so `KEY=$(cohortsync-admin create-key ci)` captures it.",
    )
    p.add_argument("name", metavar="NAME", help="who or what uses the key, e.g. amplitude-prod")
    p.add_argument(
        "--tenant",
        metavar="HOSTNAME",
        help="the tenant the key belongs to (default: the default tenant; none for --scope ops)",
    )
    p.add_argument(
        "--scope",
        choices=list(SCOPES),
        default="all",
        help="what the key may call: all (default), cdp (the /cdp/ endpoints and the Amplitude "
        "webhook), integration (the /v2/ Integration API), read (the /v1/ read API), ops (no "
        "tenant: /v1/status of every tenant, and nothing else)",
    )
    p = sub.add_parser(
        "revoke-key",
        help="revoke an API key",
        description="Revoke an API key, given its id, the start of its prefix (as list-keys "
        "shows it) or the whole key. Exits 1 when nothing or more than one key matches.",
    )
    p.add_argument("key", metavar="ID_OR_PREFIX", help="key id, key prefix, or the whole key")
    sub.add_parser(
        "list-keys",
        help="list API keys (never the keys themselves)",
        description="List API keys: id, name, prefix, scope, tenant, when created and when "
        "revoked.",
    )
    p = sub.add_parser(
        "set-rate",
        help="change the shared rate limit of all workers at runtime",
        description="Override the rate limit every worker replica shares, stored in Redis; each "
        "worker applies it at its next rate-limiter call, no restart needed. 0 lifts the limit. "
        "--reset removes the override so COHORTSYNC_RATE_LIMIT_PER_MINUTE and "
        "COHORTSYNC_RATE_BURST apply again.",
    )
    p.add_argument(
        "per_minute",
        metavar="PER_MINUTE",
        nargs="?",
        type=_non_negative,
        help="membership changes applied per minute, summed over all workers",
    )
    p.add_argument(
        "--burst", metavar="N", type=_non_negative, help="changes allowed at once beyond the rate"
    )
    p.add_argument("--reset", action="store_true", help="remove the override")
    p = sub.add_parser(
        "status",
        help="show queue depth, progress and ETA per audience",
        description="The numbers of GET /v1/status's first page: per live audience (those "
        "with pending changes first, busiest first) the changes pending (accepted, not yet "
        "applied or dropped), applied, accepted in total and dropped as superseded, with the "
        "time until its pending changes are applied (audiences with work share the rate "
        "equally); then the totals over every audience, the queue's depth (backlog, ready, in "
        "flight, deferred), the rate limit and the rate measured over the last minute, the "
        "live worker replicas, and the time until everything pending is applied.",
    )
    p.add_argument("--json", action="store_true", help="print /v1/status's JSON instead")
    p.add_argument(
        "--tenant",
        metavar="HOSTNAME",
        help="one tenant's view (its audiences, totals and rate, as its keys see "
        "/v1/status); without it, every tenant's, with the tenants with work, busiest first",
    )
    p.add_argument(
        "--page-size",
        metavar="N",
        type=_page_size,
        default=DEFAULT_STATUS_PAGE_SIZE,
        help=f"audiences listed (default {DEFAULT_STATUS_PAGE_SIZE}, at most "
        f"{MAX_STATUS_PAGE_SIZE})",
    )
    p = sub.add_parser(
        "dead-letters",
        help="list or replay changes that failed permanently",
        description="A change that fails for a permanent reason (never for an outage) is kept "
        "in Redis with the reason. list: how many, why, the oldest, per audience. replay: put "
        "them back on their audiences' backlogs with their original versions, so a replayed "
        "change never overrides a newer one, and a clear since then still removes it.",
    )
    p.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "replay"],
        help="list (default) or replay",
    )
    p.add_argument(
        "--audience",
        metavar="ID",
        type=_non_negative,
        help="list or replay only this audience's changes",
    )
    simulate.add_arguments(
        sub.add_parser(
            "simulate",
            help="play Amplitude's cohort sync against an edge and check the members",
            description="Send a cohort of N users to /amplitude/cohorts the way Amplitude does "
            "(a full sync, then entry/exit diffs; batches, parallel requests, retries with "
            "back-off), print the ETA the rate limit implies, show progress while sending and "
            "while the workers apply, and exit 0 only when the audience then holds exactly "
            "the cohort's members.",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command with the ``COHORTSYNC_*`` settings of ``environ`` (``os.environ``)."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
    except SettingsError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(COMMANDS[args.command](settings, args))
    except Exception as e:
        message = explain(e, settings)
        if message is None:
            raise
        code = e.exit_code if isinstance(e, AdminError) else 1
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
