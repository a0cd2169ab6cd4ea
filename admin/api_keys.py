"""API keys: ``create-key``, ``revoke-key``, ``list-keys``; Postgres keeps only their hashes."""

from __future__ import annotations

import argparse
import sys

import asyncpg
import msgspec

from admin.connections import connect
from admin.errors import AdminError, UsageError
from admin.output import PROG, table, when
from admin.tenants import find_tenant
from schemas import apikeys
from schemas.keys import DEFAULT_TENANT
from schemas.settings import Settings


class CreatedKey(msgspec.Struct, frozen=True):
    id: int
    # The only copy of the plaintext key: Postgres keeps its hash.
    key: str
    prefix: str


async def insert_key(
    db: asyncpg.Pool | asyncpg.Connection,
    name: str,
    scope: str | None = None,
    tenant: int | None = DEFAULT_TENANT,
) -> CreatedKey:
    """Store a new API key of ``tenant`` (None for an ``ops`` key, which belongs to none) and
    return the key, which is never stored: only its hash."""
    key = apikeys.new_key()
    key_id: int = await db.fetchval(
        """INSERT INTO api_keys (name, key_hash, key_prefix, scope, tenant_id)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        name,
        apikeys.hash_key(key),
        apikeys.shown_part(key),
        scope,
        None if scope == apikeys.OPS else tenant,
    )
    return CreatedKey(id=key_id, key=key, prefix=apikeys.shown_part(key))


async def create_key(
    database_url: str, name: str, scope: str | None = None, tenant: str | None = None
) -> CreatedKey:
    """``insert_key`` on a connection of its own, for the tenant ``tenant`` names (hostname;
    None: the default tenant)."""
    conn = await connect(database_url)
    try:
        tenant_id = DEFAULT_TENANT if tenant is None else (await find_tenant(conn, tenant)).id
        return await insert_key(conn, name, scope, tenant_id)
    finally:
        await conn.close()


async def revoke_key(db: asyncpg.Pool | asyncpg.Connection, key_id: int) -> None:
    """Revoke a key (again is a no-op: the first revocation time stays)."""
    await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )


async def create_command(settings: Settings, args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name:
        raise AdminError("the key name must not be empty")
    if args.scope == apikeys.OPS and args.tenant is not None:
        raise UsageError("an ops key belongs to no tenant: give --scope ops without --tenant")
    # NULL in the database means every surface.
    scope = None if args.scope == apikeys.ALL else args.scope
    created = await create_key(settings.database_url, name, scope, args.tenant)
    owner = "no tenant" if args.scope == apikeys.OPS else f"tenant {args.tenant or 'default'}"
    if sys.stdout.isatty():
        print(
            f"created API key {created.id} {name!r} (prefix {created.prefix}, scope: "
            f"{args.scope}, {owner})"
        )
        print("the key is shown only now; store it:")
        print(created.key)
    else:
        # Scripts capture stdout: the key alone on it, the rest on stderr.
        print(created.key)
        print(f"created API key {created.id} {name!r} ({owner})", file=sys.stderr)
    return 0


async def revoke_command(settings: Settings, args: argparse.Namespace) -> int:
    target: str = args.key
    value: int | bytes | str
    if target.isdigit():
        condition, value = "id = $1", int(target)
    elif len(target) > apikeys.SHOWN_CHARS:
        condition, value = "key_hash = $1", apikeys.hash_key(target)
    else:
        condition, value = "starts_with(key_prefix, $1)", target
    conn = await connect(settings.database_url)
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
            print(f"API key {key_id} {name!r} was already revoked at {when(revoked_at)}")
            return 0
        await revoke_key(conn, key_id)
    finally:
        await conn.close()
    print(
        f"revoked API key {key_id} {name!r}; edges that cached it refuse it within "
        f"{settings.auth_cache_ttl_s:g} s"
    )
    return 0


async def list_command(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        rows = await conn.fetch(
            """SELECT k.id, k.name, k.key_prefix, k.scope, t.hostname, k.created_at,
                   k.revoked_at
               FROM api_keys k LEFT JOIN tenants t ON t.id = k.tenant_id ORDER BY k.id"""
        )
    finally:
        await conn.close()
    if not rows:
        print(f"no API keys yet (create one: {PROG} create-key NAME)")
        return 0
    found = [
        [
            str(r["id"]),
            r["name"],
            r["key_prefix"],
            r["scope"] or "*",
            r["hostname"] or "-",
            when(r["created_at"]),
            when(r["revoked_at"]) if r["revoked_at"] else "-",
        ]
        for r in rows
    ]
    print(table(["id", "name", "prefix", "scope", "tenant", "created", "revoked"], found))
    return 0
