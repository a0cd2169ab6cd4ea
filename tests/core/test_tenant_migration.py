"""Migration 0006 on a database at 0005 that holds data: everything belongs to the default tenant
afterwards, nothing lost, and the next tenant gets id 2."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from core.migrations import all_migrations
from schemas.keys import DEFAULT_TENANT
from schemas.tenants import DEFAULT_HOSTNAME


async def test_existing_data_moves_into_the_default_tenant(database_url: str) -> None:
    schema = f"before_0006_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        for m in all_migrations():
            if m.version < 6:
                await conn.execute(m.sql)
        # As edges with COHORTSYNC_ACCOUNT_ID=7, then 42, left them.
        await conn.execute(
            """INSERT INTO audiences (account_id, name, integration, integration_id, deleted_at)
               VALUES (7, 'first', 'amplitude', 'c1', NULL), (42, 'live', 'amplitude', 'c2', NULL),
                      (42, 'gone', 'amplitude', 'c1', now())"""
        )
        await conn.execute(
            """INSERT INTO memberships (audience_id, profile_id, member, version)
               SELECT a, 'p' || n, true, n FROM generate_series(1, 2) a, generate_series(1, 5) n"""
        )
        await conn.execute(
            """INSERT INTO api_keys (name, key_hash, key_prefix, scope)
               VALUES ('all', '\\x01', 'cs_a', NULL), ('cdp', '\\x02', 'cs_b', 'cdp')"""
        )
        await conn.execute(
            """INSERT INTO profile_attributes (profile_id, attributes)
               VALUES ('p1', '{"plan": "gold"}'), ('p2', '{}')"""
        )
        before = {
            table: await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("audiences", "memberships", "api_keys", "profile_attributes")
        }

        [m6] = [m for m in all_migrations() if m.version == 6]
        await conn.execute(m6.sql)

        tenants = await conn.fetch("SELECT * FROM tenants")
        assert [
            (t["id"], t["hostname"], t["account_id"], t["rate_per_minute"], t["burst"])
            for t in tenants
        ] == [(DEFAULT_TENANT, DEFAULT_HOSTNAME, 42, None, None)]
        assert tenants[0]["live_audiences"] == 2
        for table, rows in before.items():
            after = await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
            # Every row and value kept, each now the default tenant's.
            assert [{k: v for k, v in r.items() if k != "tenant_id"} for r in after] == [
                dict(r) for r in rows
            ], table
            if table != "memberships":
                assert {r["tenant_id"] for r in after} == {DEFAULT_TENANT}, table

        # The next tenant is 2; its audiences may reuse an integration id, not its own twice.
        second = await conn.fetchval(
            "INSERT INTO tenants (hostname, account_id) VALUES ('acme.talon.one', 9) RETURNING id"
        )
        assert second == 2
        await conn.execute(
            """INSERT INTO audiences (tenant_id, account_id, name, integration, integration_id)
               VALUES (2, 9, 'theirs', 'amplitude', 'c2')"""
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO audiences (tenant_id, account_id, name, integration,
                       integration_id) VALUES (1, 42, 'again', 'amplitude', 'c2')"""
            )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO tenants (hostname, account_id) VALUES ('acme.talon.one', 1)"
            )
        # The live audiences are counted per tenant from now on.
        counts = dict(await conn.fetch("SELECT id, live_audiences FROM tenants ORDER BY id"))
        assert counts == {1: 2, 2: 1}
        # A profile id of the default tenant is another profile in tenant 2.
        await conn.execute(
            """INSERT INTO profile_attributes (tenant_id, profile_id, attributes)
               VALUES (2, 'p1', '{"plan": "free"}')"""
        )
        # Only an ops key has no tenant.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                """INSERT INTO api_keys (name, key_hash, key_prefix, scope, tenant_id)
                   VALUES ('x', '\\x03', 'cs_c', 'read', NULL)"""
            )
        await conn.execute(
            """INSERT INTO api_keys (name, key_hash, key_prefix, scope, tenant_id)
               VALUES ('ops', '\\x04', 'cs_d', 'ops', NULL)"""
        )
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def test_without_audiences_the_default_account_is_1(database_url: str) -> None:
    schema = f"empty_0006_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        for m in all_migrations():
            if m.version <= 6:
                await conn.execute(m.sql)
        row = await conn.fetchrow("SELECT hostname, account_id, live_audiences FROM tenants")
        assert tuple(row) == (DEFAULT_HOSTNAME, 1, 0)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
