"""Apply the schema migrations (``schemas/migrations/NNNN_name.sql``), safely from several
processes at once."""

from __future__ import annotations

from importlib import resources

import asyncpg
import msgspec

from schemas.keys import DEFAULT_TENANT

# Any constant works; it serialises concurrent migrators on one database.
_LOCK_ID = 0x636F686F7274  # "cohort"


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str


def all_migrations() -> list[Migration]:
    """Every ``schemas/migrations/NNNN_name.sql`` file, sorted by its number."""
    found = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def migrate(database_url: str, *, default_account_id: int | None = None) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now.

    ``default_account_id`` (``COHORTSYNC_ACCOUNT_ID``, given by ``cohortsync-admin migrate``
    and ``make run``) becomes the default tenant's account id, as the edges used it before
    tenants existed: changing the variable and migrating changes it."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied = []
            for m in all_migrations():
                if m.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        m.version,
                        m.name,
                    )
                applied.append(m.version)
            if default_account_id is not None:
                await conn.execute(
                    "UPDATE tenants SET account_id = $1 WHERE id = $2 AND account_id <> $1",
                    default_account_id,
                    DEFAULT_TENANT,
                )
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


async def pending(conn: asyncpg.Connection) -> list[int]:
    """Migrations the database has not applied yet (readiness checks use this)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [m.version for m in all_migrations() if m.version not in done]
