"""Migration 0005 on a database that already holds memberships: the counts it backfills are
exact, and from then on the triggers keep them."""

from __future__ import annotations

import uuid

import asyncpg

from core.migrations import all_migrations


async def test_backfilled_counts_match_current_memberships(database_url: str) -> None:
    schema = f"before_0005_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        for m in all_migrations():
            if m.version < 5:
                await conn.execute(m.sql)
        await conn.execute(
            """INSERT INTO audiences (account_id, name, cleared_version)
               VALUES (1, 'plain', 0), (1, 'cleared', 100), (1, 'gone', 0), (1, 'empty', 0)"""
        )
        await conn.execute(
            """INSERT INTO memberships (audience_id, profile_id, member, version)
               SELECT a, 'p' || n, n % 3 <> 0, n * 10
               FROM generate_series(1, 3) AS a, generate_series(1, 30) AS n"""
        )
        await conn.execute("UPDATE audiences SET deleted_at = now() WHERE name = 'gone'")
        [m5] = [m for m in all_migrations() if m.version == 5]
        await conn.execute(m5.sql)
        counts = {
            r["name"]: r["members_count"]
            for r in await conn.fetch("SELECT name, members_count FROM audiences")
        }
        # plain: 20 members (every third is a tombstone); cleared: those past version 100.
        assert counts == {"plain": 20, "cleared": 13, "gone": 0, "empty": 0}
        viewed = await conn.fetch(
            "SELECT audience_id, count(*) AS n FROM current_memberships GROUP BY audience_id"
        )
        assert sorted(r["n"] for r in viewed) == [13, 20]
        assert await conn.fetchval("SELECT live FROM audience_totals") == 3
        # The triggers take over: a change after the migration moves the count.
        await conn.execute(
            """INSERT INTO memberships (audience_id, profile_id, member, version)
               VALUES (4, 'new', true, 1)"""
        )
        assert await conn.fetchval("SELECT members_count FROM audiences WHERE id = 4") == 1
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
