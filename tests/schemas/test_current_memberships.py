"""The ``current_memberships`` view: the one place the "current member" rule is written."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]


async def _audience(db: asyncpg.Pool, name: str, cleared_version: int = 0) -> int:
    audience_id: int = await db.fetchval(
        "INSERT INTO audiences (account_id, name, cleared_version) VALUES (1, $1, $2) RETURNING id",
        name,
        cleared_version,
    )
    return audience_id


async def _current(db: asyncpg.Pool) -> set[tuple[int, str]]:
    rows = await db.fetch("SELECT audience_id, profile_id FROM current_memberships")
    return {(r["audience_id"], r["profile_id"]) for r in rows}


async def test_only_members_newer_than_the_clear_in_live_audiences_are_current(
    db: asyncpg.Pool,
) -> None:
    cleared = await _audience(db, "cleared", cleared_version=100)
    plain = await _audience(db, "plain")
    gone = await _audience(db, "gone")
    await db.executemany(
        "INSERT INTO memberships (audience_id, profile_id, member, version) VALUES ($1,$2,$3,$4)",
        [
            (cleared, "after-clear", True, 101),
            (cleared, "at-clear", True, 100),
            (cleared, "before-clear", True, 99),
            (cleared, "tombstone", False, 150),
            (plain, "member", True, 1),
            (gone, "member", True, 1),
        ],
    )
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", gone)
    assert await _current(db) == {(cleared, "after-clear"), (plain, "member")}

    # A later clear supersedes what was current; a delete takes the audience's members away.
    await db.execute("UPDATE audiences SET cleared_version = 101 WHERE id = $1", cleared)
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", plain)
    assert await _current(db) == set()


def test_no_reader_writes_the_rule_again() -> None:
    """Reads select from the view; the worker's upsert checks ``cleared_version < version``
    for a write, a different rule."""
    copies = [
        str(path.relative_to(ROOT))
        for package in ("ingest", "worker", "admin", "core")
        for path in (ROOT / package).rglob("*.py")
        if re.search(r"version\s*>\s*(\w+\.)?cleared_version", path.read_text())
    ]
    assert copies == []
