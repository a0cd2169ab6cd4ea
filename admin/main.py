"""``cohortsync-admin``: migrate, manage API keys, set the shared rate, show the queue."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from admin import deadletters, simulate
from admin.progress import duration
from core.migrations import migrate
from ingest import status
from ingest.auth import SCOPES
from schemas import apikeys, keys
from schemas.lua import source
from schemas.settings import Settings, SettingsError
from schemas.status import Status

PROG = "cohortsync-admin"
CONNECT_TIMEOUT_S = 10.0


class AdminError(Exception):
    """An expected failure: reported as one line on stderr, exit code 1."""


class CreatedKey(msgspec.Struct, frozen=True):
    id: int
    # The only copy of the plaintext key: Postgres keeps its hash.
    key: str
    prefix: str


async def create_key(database_url: str, name: str, scope: str | None = None) -> CreatedKey:
    """Store a new API key's hash and return the key, which is never stored."""
    key = apikeys.new_key()
    conn = await _connect(database_url)
    try:
        key_id: int = await conn.fetchval(
            """INSERT INTO api_keys (name, key_hash, key_prefix, scope)
               VALUES ($1, $2, $3, $4) RETURNING id""",
            name,
            apikeys.hash_key(key),
            apikeys.shown_part(key),
            scope,
        )
    finally:
        await conn.close()
    return CreatedKey(id=key_id, key=key, prefix=apikeys.shown_part(key))


def describe_url(url: str) -> str:
    """``host:port/db`` of a Postgres or Redis URL: safe to print, it never holds a password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    # libpq-style URLs may name the host (or a socket directory) in the query string.
    host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
    where = f"{host}:{port}" if port else host
    return f"{where}{parts.path}" if parts.path not in ("", "/") else where


async def _connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_S)


def _redis(redis_url: str) -> aioredis.Redis:
    client: aioredis.Redis = aioredis.Redis.from_url(
        redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S
    )
    return client


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = await migrate(settings.database_url)
    where = describe_url(settings.database_url)
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))} to {where}")
    else:
        print(f"{where} is up to date")
    return 0


async def _create_key(settings: Settings, args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name:
        raise AdminError("the key name must not be empty")
    # NULL in the database means every surface.
    scope = None if args.scope == "all" else args.scope
    created = await create_key(settings.database_url, name, scope)
    if sys.stdout.isatty():
        print(
            f"created API key {created.id} {name!r} (prefix {created.prefix}, scope: {args.scope})"
        )
        print("the key is shown only now; store it:")
        print(created.key)
    else:
        # Scripts capture stdout: the key alone on it, the rest on stderr.
        print(created.key)
        print(f"created API key {created.id} {name!r}", file=sys.stderr)
    return 0


async def _revoke_key(settings: Settings, args: argparse.Namespace) -> int:
    target: str = args.key
    value: int | bytes | str
    if target.isdigit():
        condition, value = "id = $1", int(target)
    elif len(target) > apikeys.SHOWN_CHARS:
        condition, value = "key_hash = $1", apikeys.hash_key(target)
    else:
        condition, value = "starts_with(key_prefix, $1)", target
    conn = await _connect(settings.database_url)
    try:
        rows = await conn.fetch(
            f"SELECT id, name, revoked_at FROM api_keys WHERE {condition} ORDER BY id", value
        )
        if not rows:
            raise AdminError(f"no API key matches {target!r} (see: {PROG} list-keys)")
        if len(rows) > 1:
            ids = ", ".join(str(r["id"]) for r in rows)
            raise AdminError(f"{target!r} matches keys {ids}; revoke one by its id")
        key_id, name, revoked_at = rows[0]["id"], rows[0]["name"], rows[0]["revoked_at"]
        if revoked_at is not None:
            print(f"API key {key_id} {name!r} was already revoked at {_when(revoked_at)}")
            return 0
        await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
        )
    finally:
        await conn.close()
    print(
        f"revoked API key {key_id} {name!r}; edges that cached it refuse it within "
        f"{settings.auth_cache_ttl_s:g} s"
    )
    return 0


async def _list_keys(settings: Settings, args: argparse.Namespace) -> int:
    conn = await _connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, name, key_prefix, scope, created_at, revoked_at FROM api_keys ORDER BY id"
        )
    finally:
        await conn.close()
    if not rows:
        print(f"no API keys yet (create one: {PROG} create-key NAME)")
        return 0
    table = [
        [
            str(r["id"]),
            r["name"],
            r["key_prefix"],
            r["scope"] or "*",
            _when(r["created_at"]),
            _when(r["revoked_at"]) if r["revoked_at"] else "-",
        ]
        for r in rows
    ]
    print(_table(["id", "name", "prefix", "scope", "created", "revoked"], table))
    return 0


async def _set_rate(settings: Settings, args: argparse.Namespace) -> int:
    if args.reset == (args.per_minute is not None) or (args.reset and args.burst is not None):
        raise AdminError("give either PER_MINUTE [--burst N] or --reset")
    client = _redis(settings.redis_url)
    try:
        async with client.pipeline(transaction=True) as pipe:
            if args.reset:
                # Only the override: the rates the workers publish there stay.
                pipe.hdel(keys.CONFIG, keys.CONFIG_RATE, keys.CONFIG_BURST)
            else:
                fields: dict[str, int] = {keys.CONFIG_RATE: args.per_minute}
                if args.burst is not None:
                    fields[keys.CONFIG_BURST] = args.burst
                pipe.hset(keys.CONFIG, mapping=fields)
            pipe.hget(keys.CONFIG, keys.CONFIG_BURST)
            replies: list[Any] = await pipe.execute()
    finally:
        await client.aclose()
    if args.reset:
        print(
            "rate override removed: workers use their COHORTSYNC_RATE_LIMIT_PER_MINUTE and "
            "COHORTSYNC_RATE_BURST again"
        )
        return 0
    burst = replies[-1]
    burst_text = burst.decode() if burst is not None else f"{settings.rate_burst} (default)"
    rate_text = "unlimited" if args.per_minute == 0 else f"{args.per_minute} changes/min"
    print(
        f"rate set to {rate_text}, burst {burst_text}; every worker applies it at its next change"
    )
    return 0


async def _status(settings: Settings, args: argparse.Namespace) -> int:
    conn = await _connect(settings.database_url)
    client = _redis(settings.redis_url)
    try:
        queue_state = client.register_script(source("queue_state"))
        found = await status.read_status(queue_state, conn, settings)
    finally:
        await client.aclose()
        await conn.close()
    if args.json:
        print(msgspec.json.encode(found).decode())
        return 0
    print(format_status(found, settings.queue_name))
    return 0


def format_status(found: Status, queue_name: str) -> str:
    """``cohortsync-admin status``: /v1/status's numbers as a table and three lines."""
    rows = [
        [
            str(a.id),
            _clip(a.name, 40),
            f"{a.pending:,}",
            f"{a.applied:,}",
            f"{a.total:,}",
            f"{a.dropped:,}",
            f"{a.dead_lettered:,}",
            _eta(a.eta_seconds, a.pending),
        ]
        for a in found.audiences
    ]
    headers = ["audience", "name", "pending", "applied", "total", "dropped", "dead", "eta"]
    lines = [_table(headers, rows, numeric_from=2) if rows else "no live audiences", ""]
    q, rate = found.queue_depth, found.rate
    limit = f"{rate.configured_per_minute:,}/min" if rate.configured_per_minute else "none"
    pending = sum(a.pending for a in found.audiences)
    lines += [
        f"queue: backlog {q.backlog:,}, ready {q.ready:,}, in flight {q.in_flight:,}, "
        f"deferred {q.deferred:,} (arq queue {queue_name})",
        f"rate: limit {limit}, applied in the last minute {rate.measured_per_minute:,}; "
        f"workers alive: {found.workers_live}",
        f"pending: {pending:,} changes, all applied in {_eta(found.eta_seconds, pending)}",
    ]
    if found.dead_letters:
        lines.append(
            f"dead letters: {found.dead_letters:,} changes failed permanently "
            f"(see {PROG} dead-letters list)"
        )
    return "\n".join(lines)


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    client = _redis(settings.redis_url)
    try:
        if args.action == "replay":
            replayed, malformed = await deadletters.replay(client, args.audience)
            scope = f" of audience {args.audience}" if args.audience is not None else ""
            print(
                f"re-queued {replayed:,} dead-lettered changes{scope} with their original "
                "versions (a newer change or a clear still wins)"
            )
            if malformed:
                print(f"left {malformed:,} letters that hold no change (see dead-letters list)")
            return 0
        found = await deadletters.summarize(client, args.audience)
    finally:
        await client.aclose()
    if not found.letters:
        print("no dead letters")
        return 0
    oldest = _when(datetime.fromtimestamp(found.oldest_ms / 1000, UTC)) if found.oldest_ms else "?"
    lines = [f"{found.letters:,} dead letters, the oldest failed at {oldest}", ""]
    reasons = [[f"{n:,}", _clip(reason, 90)] for reason, n in found.reasons.most_common(20)]
    lines += [_table(["changes", "reason"], reasons), ""]
    audiences = [[str(a), f"{n:,}"] for a, n in found.per_audience.most_common(20)]
    if audiences:
        lines.append(_table(["audience", "changes"], audiences, numeric_from=1))
    if found.malformed:
        lines.append(f"{found.malformed:,} letters hold no change and cannot be replayed")
    lines.append(f"replay with: {PROG} dead-letters replay [--audience ID]")
    print("\n".join(lines))
    return 0


def _eta(seconds: float | None, pending: int) -> str:
    if pending == 0:
        return "done"
    return "unknown" if seconds is None else duration(seconds)


def explain(error: BaseException, settings: Settings) -> str | None:
    """One line for an expected failure (a service unreachable, no tables yet), else None."""
    if isinstance(error, AdminError):
        return str(error)
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        return f"cannot reach Redis at {describe_url(settings.redis_url)}: {error}"
    if isinstance(error, RedisError):
        return f"Redis at {describe_url(settings.redis_url)}: {error}"
    if isinstance(error, asyncpg.UndefinedTableError):
        return f"the database has no cohortsync tables yet; run: {PROG} migrate"
    if isinstance(error, OSError | TimeoutError):
        return f"cannot reach Postgres at {describe_url(settings.database_url)}: {error}"
    if isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
        return f"Postgres at {describe_url(settings.database_url)}: {error}"
    return None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 99) -> str:
    """Plain aligned columns; columns from ``numeric_from`` on are right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i >= numeric_from else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
COMMANDS: dict[str, Command] = {
    "migrate": _migrate,
    "create-key": _create_key,
    "revoke-key": _revoke_key,
    "list-keys": _list_keys,
    "set-rate": _set_rate,
    "status": _status,
    "dead-letters": _dead_letters,
    "simulate": simulate.command,
}


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
        description="Operate cohortsync: schema, API keys, the shared rate limit, queue status, "
        "a simulated Amplitude sync.",
        epilog="Connection settings come from COHORTSYNC_DATABASE_URL and COHORTSYNC_REDIS_URL "
        "(see README.md for every COHORTSYNC_* variable).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "migrate",
        help="apply pending database migrations",
        description="Apply every schema migration the database has not applied yet. Safe to run "
        "from several processes at once and to repeat.",
    )
    p = sub.add_parser(
        "create-key",
        help="create an API key and print it once",
        description="Create an API key for the Authorization: ApiKey-v1 <key> header. The key is "
        "printed once and only its SHA-256 hash is stored. When stdout is not a terminal, stdout "
        "holds only the key, so `KEY=$(cohortsync-admin create-key ci)` captures it.",
    )
    p.add_argument("name", metavar="NAME", help="who or what uses the key, e.g. amplitude-prod")
    p.add_argument(
        "--scope",
        choices=list(SCOPES),
        default="all",
        help="what the key may call: all (default), cdp (the /cdp/ endpoints and the Amplitude "
        "webhook), integration (the /v2/ Integration API), read (the /v1/ read API)",
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
        description="List API keys: id, name, prefix, scope, when created and when revoked.",
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
        description="The numbers of GET /v1/status: per live audience the changes pending "
        "(accepted, not yet applied or dropped), applied, accepted in total and dropped as "
        "superseded, with the time until its pending changes are applied (audiences with work "
        "share the rate equally); then the queue's depth (backlog, ready, in flight, "
        "deferred), the rate limit and the rate measured over the last minute, the live "
        "worker replicas, and the time until everything pending is applied.",
    )
    p.add_argument("--json", action="store_true", help="print /v1/status's JSON instead")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(COMMANDS[args.command](settings, args))
    except Exception as e:
        message = explain(e, settings)
        if message is None:
            raise
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
