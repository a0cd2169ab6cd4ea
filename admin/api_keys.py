"""API keys: ``create-key``, ``revoke-key``, ``list-keys``; Postgres keeps only their hashes."""

from __future__ import annotations

import argparse
import sys

import asyncpg
import msgspec

from admin.connections import connect
from admin.errors import AdminError
from admin.output import PROG, table, when
from schemas import apikeys
from schemas.settings import Settings


class CreatedKey(msgspec.Struct, frozen=True):
    id: int
    # The only copy of the plaintext key: Postgres keeps its hash.
    key: str
    prefix: str


async def insert_key(
    db: asyncpg.Pool | asyncpg.Connection, name: str, scope: str | None = None
) -> CreatedKey:
    """Store a new API key's hash and return the key, which is never stored."""
    key = apikeys.new_key()
    key_id: int = await db.fetchval(
        """INSERT INTO api_keys (name, key_hash, key_prefix, scope)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        name,
        apikeys.hash_key(key),
        apikeys.shown_part(key),
        scope,
    )
    return CreatedKey(id=key_id, key=key, prefix=apikeys.shown_part(key))


async def create_key(database_url: str, name: str, scope: str | None = None) -> CreatedKey:
    """``insert_key`` on a connection of its own."""
    conn = await connect(database_url)
    try:
        return await insert_key(conn, name, scope)
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
    # NULL in the database means every surface.
    scope = None if args.scope == apikeys.ALL else args.scope
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
            "SELECT id, name, key_prefix, scope, created_at, revoked_at FROM api_keys ORDER BY id"
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
            when(r["created_at"]),
            when(r["revoked_at"]) if r["revoked_at"] else "-",
        ]
        for r in rows
    ]
    print(table(["id", "name", "prefix", "scope", "created", "revoked"], found))
    return 0
