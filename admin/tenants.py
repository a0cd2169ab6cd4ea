"""``cohortsync-admin tenant``: the Talon.One deployments one fleet serves — add, list, set-rate,
remove — each with its own account id, keys, audiences and rate limit."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis

from admin.connections import connect, redis_client, scripts
from admin.errors import UsageError
from admin.output import PROG, table
from core.clears import clear_or_delete
from core.scripts import Scripts
from schemas import keys, tenants
from schemas.keys import DEFAULT_TENANT, Keys
from schemas.settings import Settings

# Postgres' integer and bigint: what the tenants table holds.
MAX_RATE = 2**31 - 1
MAX_ACCOUNT_ID = 2**63 - 1
# A purge deletes a removed tenant's rows this many per transaction, so it holds no lock long.
PURGE_BATCH = 10_000
# Audiences an edge created with the tenant's key while it was being removed (a key is trusted
# for up to COHORTSYNC_AUTH_CACHE_TTL_S after its revocation) are purged again, this often.
REMOVE_ATTEMPTS = 3


class Tenant(msgspec.Struct, frozen=True):
    """A ``tenants`` row."""

    id: int
    hostname: str
    account_id: int
    rate_per_minute: int | None
    burst: int | None
    live_audiences: int


_COLUMNS = "id, hostname, account_id, rate_per_minute, burst, live_audiences"


def _tenant(row: asyncpg.Record) -> Tenant:
    return Tenant(**dict(row.items()))


def hostname_of(text: str) -> str:
    """A tenant's name as given (a bare hostname, or a URL of one), lower-cased; ``UsageError``
    when it is not a hostname."""
    found = tenants.hostname(text)
    if not tenants.is_hostname(found):
        raise UsageError(f"{text!r} is not a hostname (e.g. acme.europe-west1.talon.one)")
    return found


async def find_tenant(db: asyncpg.Pool | asyncpg.Connection, hostname: str) -> Tenant:
    """The tenant ``hostname`` names, else ``UsageError`` naming the command that lists them."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM tenants WHERE hostname = $1", tenants.hostname(hostname)
    )
    if row is None:
        raise UsageError(f"no tenant {hostname!r} (see: {PROG} tenant list)")
    return _tenant(row)


async def add_tenant(
    db: asyncpg.Pool | asyncpg.Connection,
    hostname: str,
    account_id: int,
    rate_per_minute: int | None = None,
    burst: int | None = None,
) -> Tenant:
    """Store a new tenant; ``UsageError`` when its hostname is taken."""
    name = hostname_of(hostname)
    try:
        row = await db.fetchrow(
            f"""INSERT INTO tenants (hostname, account_id, rate_per_minute, burst)
                VALUES ($1, $2, $3, $4) RETURNING {_COLUMNS}""",
            name,
            account_id,
            rate_per_minute,
            burst,
        )
    except asyncpg.UniqueViolationError:
        raise UsageError(f"tenant {name!r} already exists (see: {PROG} tenant list)") from None
    assert row is not None
    return _tenant(row)


class DefaultRate(msgspec.Struct, frozen=True):
    """What a tenant without a rate of its own gets, as the workers apply it."""

    rate_per_minute: int
    burst: int


async def default_rate(client: aioredis.Redis, settings: Settings) -> DefaultRate:
    """``cohortsync-admin set-rate``'s override, else the rate the workers were started with
    (as they publish it), else this process's COHORTSYNC_RATE_LIMIT_PER_MINUTE and _BURST."""
    fields = [
        keys.CONFIG_RATE,
        keys.CONFIG_WORKERS_RATE,
        keys.CONFIG_BURST,
        keys.CONFIG_WORKERS_BURST,
    ]
    config = Keys(settings.queue_name).config
    found = await cast(Awaitable[list[bytes | None]], client.hmget(config, fields))
    rate, workers_rate, burst, workers_burst = found
    return DefaultRate(
        rate_per_minute=int(rate or workers_rate or settings.rate_limit_per_minute),
        burst=int(burst or workers_burst or settings.rate_burst),
    )


async def backlogs(client: aioredis.Redis, settings: Settings, ids: Sequence[int]) -> list[int]:
    """Each tenant's changes accepted and not yet applied or dropped, in one round trip."""
    k = Keys(settings.queue_name)
    async with client.pipeline(transaction=False) as pipe:
        for tenant in ids:
            pipe.hget(k.tenant(tenant).totals, "pending")
        replies: list[bytes | None] = await pipe.execute()
    return [int(r or 0) for r in replies]


async def _add(settings: Settings, args: argparse.Namespace) -> int:
    account_id = settings.account_id if args.account_id is None else args.account_id
    conn = await connect(settings.database_url)
    try:
        added = await add_tenant(conn, args.hostname, account_id, args.rate_per_minute, args.burst)
    finally:
        await conn.close()
    print(
        f"added tenant {added.id} {added.hostname!r} (account {added.account_id}, rate "
        f"{_own(added.rate_per_minute, 'per minute')}, burst {_own(added.burst, '')}); "
        f"give it a key: {PROG} create-key NAME --tenant {added.hostname}"
    )
    return 0


def _own(value: int | None, unit: str) -> str:
    if value is None:
        return "default"
    return "unlimited" if value == 0 and unit else f"{value:,}{' ' + unit if unit else ''}"


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        found = [
            _tenant(r) for r in await conn.fetch(f"SELECT {_COLUMNS} FROM tenants ORDER BY id")
        ]
    finally:
        await conn.close()
    client = redis_client(settings.redis_url)
    try:
        default = await default_rate(client, settings)
        pending = await backlogs(client, settings, [t.id for t in found])
    finally:
        await client.aclose()
    rows = [
        [
            t.hostname,
            str(t.id),
            str(t.account_id),
            _in_force(t.rate_per_minute, default.rate_per_minute),
            _in_force(t.burst, default.burst),
            f"{t.live_audiences:,}",
            f"{backlog:,}",
        ]
        for t, backlog in zip(found, pending, strict=True)
    ]
    headers = ["hostname", "id", "account", "rate/min", "burst", "audiences", "backlog"]
    print(table(headers, rows, numeric_from=1))
    return 0


def _in_force(own: int | None, default: int) -> str:
    # The rate of a tenant without its own is the workers' default: said so beside it.
    value = default if own is None else own
    text = f"{value:,}" if value else "none"
    return text if own is not None else f"{text} (default)"


async def _set_rate(settings: Settings, args: argparse.Namespace) -> int:
    if args.reset == (args.per_minute is not None) or (args.reset and args.burst is not None):
        raise UsageError("give either PER_MINUTE [--burst N] or --reset")
    conn = await connect(settings.database_url)
    try:
        tenant = await find_tenant(conn, args.hostname)
        if args.reset:
            rate, burst = None, None
        else:
            rate, burst = args.per_minute, tenant.burst if args.burst is None else args.burst
        await conn.execute(
            "UPDATE tenants SET rate_per_minute = $2, burst = $3 WHERE id = $1",
            tenant.id,
            rate,
            burst,
        )
    finally:
        await conn.close()
    print(
        f"tenant {tenant.hostname!r}: rate {_own(rate, 'per minute')}, burst "
        f"{_own(burst, '')}; every worker applies it within a second"
    )
    return 0


async def _remove(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    client = redis_client(settings.redis_url)
    try:
        tenant = await find_tenant(conn, args.hostname)
        if tenant.id == DEFAULT_TENANT:
            raise UsageError(
                f"the default tenant {tenant.hostname!r} holds what keys without --tenant "
                "create; it cannot be removed"
            )
        if tenant.live_audiences and not args.purge:
            raise UsageError(
                f"tenant {tenant.hostname!r} has {tenant.live_audiences:,} live audiences; "
                "delete them first, or pass --purge to delete them with their members"
            )
        # No new work from now on: edges refuse its keys within COHORTSYNC_AUTH_CACHE_TTL_S.
        await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND revoked_at IS NULL",
            tenant.id,
        )
        deleted = 0
        for _ in range(REMOVE_ATTEMPTS):
            if args.purge:
                deleted += await _delete_audiences(conn, scripts(client, settings), tenant.id)
            await _delete_rows(conn, tenant.id)
            if await _delete_tenant(conn, tenant.id):
                break
            if not args.purge:
                raise UsageError(
                    f"tenant {tenant.hostname!r} got new audiences meanwhile (its keys are "
                    "revoked now); run again, or pass --purge"
                )
        else:
            raise UsageError(f"tenant {tenant.hostname!r} keeps getting new audiences; run again")
        await scripts(client, settings).backlogs.forget_tenant(tenant.id)
    finally:
        await client.aclose()
        await conn.close()
    purged = f", {deleted:,} live audiences deleted" if args.purge else ""
    print(f"removed tenant {tenant.id} {tenant.hostname!r}{purged}")
    return 0


async def _delete_audiences(conn: asyncpg.Connection, own: Scripts, tenant: int) -> int:
    """Delete the tenant's live audiences as the edge's DELETE does: Postgres, then Redis drops
    their backlogs."""
    deleted = 0
    while True:
        ids = await conn.fetch(
            """SELECT id FROM audiences WHERE tenant_id = $1 AND deleted_at IS NULL
               ORDER BY id LIMIT 1000""",
            tenant,
        )
        if not ids:
            return deleted
        for row in ids:
            if await clear_or_delete(conn, own, row["id"], delete=True, tenant=tenant):
                deleted += 1


async def _delete_rows(conn: asyncpg.Connection, tenant: int) -> None:
    """The memberships of the tenant's (deleted) audiences and its profiles' attributes, a
    batch per transaction."""
    audience_ids = [
        r["id"] for r in await conn.fetch("SELECT id FROM audiences WHERE tenant_id = $1", tenant)
    ]
    for audience_id in audience_ids:
        while await _deleted(
            conn,
            """DELETE FROM memberships WHERE audience_id = $1 AND profile_id IN (
                   SELECT profile_id FROM memberships WHERE audience_id = $1 LIMIT $2)""",
            audience_id,
        ):
            pass
    while await _deleted(
        conn,
        """DELETE FROM profile_attributes WHERE tenant_id = $1 AND profile_id IN (
               SELECT profile_id FROM profile_attributes WHERE tenant_id = $1 LIMIT $2)""",
        tenant,
    ):
        pass


async def _deleted(conn: asyncpg.Connection, sql: str, key: int) -> int:
    status: str = await conn.execute(sql, key, PURGE_BATCH)
    return int(status.rsplit(" ", 1)[1])


async def _delete_tenant(conn: asyncpg.Connection, tenant: int) -> bool:
    """Delete the tenant with its keys and (deleted) audiences, unless a live audience appeared
    meanwhile; False then."""
    async with conn.transaction():
        live = await conn.fetchval(
            "SELECT live_audiences FROM tenants WHERE id = $1 FOR UPDATE", tenant
        )
        if live:
            return False
        # What the last batches did not reach, if anything came meanwhile.
        await conn.execute(
            """DELETE FROM memberships
               WHERE audience_id IN (SELECT id FROM audiences WHERE tenant_id = $1)""",
            tenant,
        )
        await conn.execute("DELETE FROM audiences WHERE tenant_id = $1", tenant)
        await conn.execute("DELETE FROM profile_attributes WHERE tenant_id = $1", tenant)
        await conn.execute("DELETE FROM api_keys WHERE tenant_id = $1", tenant)
        await conn.execute("DELETE FROM tenants WHERE id = $1", tenant)
    return True


Action = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
ACTIONS: dict[str, Action] = {
    "add": _add,
    "list": _list,
    "set-rate": _set_rate,
    "remove": _remove,
}


async def command(settings: Settings, args: argparse.Namespace) -> int:
    return await ACTIONS[args.action](settings, args)


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not from {low} to {high:,}")
        return value

    return parse


def add_parser(sub: Any) -> None:
    """The ``tenant`` command and its actions, on ``cohortsync-admin``'s subparsers."""
    parser = sub.add_parser(
        "tenant",
        help="add, list, re-rate or remove the Talon.One deployments this fleet serves",
        description="A tenant is one Talon.One deployment, named by its hostname (the CDP "
        "API's destination-hostname, e.g. acme.europe-west1.talon.one), with its own account "
        "id, API keys, audiences, profiles and rate limit. Data from before tenants belongs "
        "to the default tenant, 'default'.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    rate = _whole(0, MAX_RATE)
    p = actions.add_parser(
        "add",
        help="add a tenant",
        description="Add a tenant. Its keys (create-key NAME --tenant HOSTNAME) see only its "
        "audiences and profiles, and its /cdp/ calls must name HOSTNAME in their "
        "destination-hostname header.",
    )
    p.add_argument("hostname", metavar="HOSTNAME", help="the deployment's hostname")
    p.add_argument(
        "--account-id",
        metavar="N",
        type=_whole(1, MAX_ACCOUNT_ID),
        help="the Talon.One account id its audiences report (default: COHORTSYNC_ACCOUNT_ID)",
    )
    p.add_argument(
        "--rate-per-minute",
        metavar="N",
        type=rate,
        help="membership changes applied per minute for it, summed over all workers; 0 lifts "
        "its limit (default: the workers' COHORTSYNC_RATE_LIMIT_PER_MINUTE)",
    )
    p.add_argument(
        "--burst",
        metavar="N",
        type=rate,
        help="changes allowed at once beyond its rate (default: COHORTSYNC_RATE_BURST)",
    )
    actions.add_parser(
        "list",
        help="list tenants with their rate in force and backlog",
        description="List tenants: hostname, id, account id, the rate and burst in force (its "
        "own, or the workers' default, marked so), its live audiences and its backlog "
        "(changes accepted, not yet applied or dropped).",
    )
    p = actions.add_parser(
        "set-rate",
        help="change a tenant's rate limit at runtime",
        description="Set a tenant's rate limit, stored in Postgres; every worker replica "
        "applies it within a second, no restart needed. 0 lifts its limit. --reset gives it "
        "the workers' default again (COHORTSYNC_RATE_LIMIT_PER_MINUTE and "
        "COHORTSYNC_RATE_BURST). Its burst stays unless --burst is given.",
    )
    p.add_argument("hostname", metavar="HOSTNAME", help="the tenant")
    p.add_argument(
        "per_minute",
        metavar="PER_MINUTE",
        nargs="?",
        type=rate,
        help="membership changes applied per minute for it, summed over all workers",
    )
    p.add_argument("--burst", metavar="N", type=rate, help="changes allowed at once beyond it")
    p.add_argument("--reset", action="store_true", help="back to the workers' default")
    p = actions.add_parser(
        "remove",
        help="remove a tenant, its keys and (with --purge) its audiences",
        description="Remove a tenant: its API keys are revoked at once, then deleted with it. "
        "Refused while it has live audiences, unless --purge: they are deleted as DELETE "
        "/v2/audiences/{id} deletes one (their queued changes dropped), then their members "
        f"and its profiles' attributes, {PURGE_BATCH:,} rows per transaction. The default "
        "tenant cannot be removed.",
    )
    p.add_argument("hostname", metavar="HOSTNAME", help="the tenant")
    p.add_argument(
        "--purge", action="store_true", help="delete its live audiences and their members too"
    )
