"""``cohortsync-admin`` as operators run it: the installed console script, a process of its own."""

from __future__ import annotations

import asyncpg

from schemas import apikeys
from tests.support.admin import Admin, run_console_script
from tests.support.process import environment


async def test_create_key_prints_key_once_and_stores_only_its_hash(
    admin: Admin, db: asyncpg.Pool, database_url: str, redis_url: str
) -> None:
    env = environment(database_url=database_url, redis_url=redis_url)
    run = await run_console_script("create-key", "amplitude-prod", "--scope", "cdp", env=env)
    assert run.code == 0, run.err
    # stdout is a pipe here: the key alone, so `KEY=$(cohortsync-admin create-key x)` works.
    assert run.out.count("\n") == 1
    key = run.out.strip()
    assert key.startswith(apikeys.KEY_PREFIX)
    row = await db.fetchrow("SELECT * FROM api_keys")
    assert row["key_hash"] == apikeys.hash_key(key)
    assert (row["name"], row["key_prefix"], row["scope"]) == (
        "amplitude-prod",
        key[:8],
        "cdp",
    )
    assert row["revoked_at"] is None
    assert str(row["id"]) in run.err
    everything = await db.fetchval("SELECT string_agg(k::text, ' ') FROM api_keys k")
    assert key not in everything
    assert key[apikeys.SHOWN_CHARS :] not in everything

    listed = await admin("list-keys")
    assert listed.code == 0
    assert key[:8] in listed.out
    assert key not in listed.out
