"""Postgres rows: an audiences page, a full member read and a clear at millions of memberships,
each beside today's SQL (a count(*) per audience, OFFSET, a one-transaction DELETE) run on the
same data in the same run."""

from __future__ import annotations

import statistics
import time
from typing import Any

import aiohttp
import asyncpg

from tests.bench.edge import start_edge
from tests.bench.processes import Children
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, times
from worker.sweeper import sweep_once

PAGE_TARGET_MS = 50.0
READ_TARGET_S = 60.0
CLEAR_TARGET_MS = 100.0
PAGE_SIZE = 1000
# Requests per figure; the median is kept.
TRIES = 5
# Audiences loaded per INSERT: statements of about a million rows at most.
LOAD_AUDIENCES_PER_STATEMENT = 100

# Today's SQL (before migration 0005), the baselines.
OLD_AUDIENCE_PAGE = [
    "SELECT count(*) FROM audiences WHERE deleted_at IS NULL",
    """SELECT a.id, a.account_id, a.name, a.description, a.sandbox, a.integration,
           a.integration_id, a.created_in_3rd_party, a.subscribed_applications_ids, a.created_at,
           a.last_update, a.attributes::text AS attributes,
           (SELECT count(*) FROM current_memberships c WHERE c.audience_id = a.id) AS members_count
       FROM audiences a WHERE a.deleted_at IS NULL ORDER BY a.id LIMIT 1000 OFFSET 0""",
]
OLD_MEMBER_COUNT = "SELECT count(*) FROM current_memberships WHERE audience_id = $1"
OLD_MEMBER_PAGE = """SELECT profile_id, updated_at FROM current_memberships
    WHERE audience_id = $1 ORDER BY profile_id LIMIT 1000 OFFSET $2"""
OLD_CLEAR = [
    """DELETE FROM memberships WHERE audience_id = $1 AND version < $2 AND profile_id IN (
        SELECT profile_id FROM memberships WHERE audience_id = $1 AND version < $2
        ORDER BY profile_id FOR UPDATE)""",
    """UPDATE audiences SET cleared_version = greatest(cleared_version, $2),
        last_update = now() WHERE id = $1 AND deleted_at IS NULL""",
]
COUNT_TRIGGERS = ("memberships_counted_insert", "memberships_counted_update",
                  "memberships_counted_delete")  # fmt: skip


async def _load(db: asyncpg.Pool, audiences: list[int], first: int, last: int) -> None:
    """Members ``first``..``last`` (1-based) of every audience, through the count triggers."""
    for i in range(0, len(audiences), LOAD_AUDIENCES_PER_STATEMENT):
        await db.execute(
            """INSERT INTO memberships (audience_id, profile_id, member, version)
               SELECT a, 'user-' || lpad(n::text, 8, '0'), true, 1
               FROM unnest($1::bigint[]) AS a, generate_series($2::int, $3::int) AS n""",
            audiences[i : i + LOAD_AUDIENCES_PER_STATEMENT],
            first,
            last,
        )
    await db.execute("VACUUM ANALYZE memberships")
    await db.execute("VACUUM ANALYZE audiences")


async def _ms(call: Any, tries: int = TRIES) -> float:
    spent = []
    for _ in range(tries):
        began = time.perf_counter()
        await call()
        spent.append(time.perf_counter() - began)
    return statistics.median(spent) * 1000


async def _old_page_ms(db: asyncpg.Pool) -> float:
    async def page() -> None:
        async with db.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            for sql in OLD_AUDIENCE_PAGE:
                await conn.fetch(sql)

    return await _ms(page, tries=3)


class _Edge:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.base + path, params=params) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status} {await resp.text()}")
            found: dict[str, Any] = await resp.json()
            return found

    async def delete(self, path: str) -> None:
        async with self.session.delete(self.base + path) as resp:
            if resp.status != 204:
                raise RuntimeError(f"DELETE {path}: {resp.status} {await resp.text()}")


async def _page_rows(svc: Services, edge: _Edge, sizes: Sizes) -> list[Row]:
    audiences = [await svc.new_audience(f"page-{i}") for i in range(sizes.page_audiences)]
    costs: dict[int, tuple[float, float]] = {}
    loaded = 0
    for total in sizes.page_memberships:
        per_audience = total // len(audiences)
        await _load(svc.db, audiences, loaded + 1, per_audience)
        loaded = per_audience
        page = await edge.get("/v1/audiences", pageSize=str(PAGE_SIZE))
        if page["data"][0]["membersCount"] != per_audience:
            raise RuntimeError(f"membersCount {page['data'][0]['membersCount']}, not {loaded}")
        new = await _ms(lambda: edge.get("/v1/audiences", pageSize=str(PAGE_SIZE)))
        costs[total] = (new, await _old_page_ms(svc.db))
    largest = sizes.page_memberships[-1]
    new, old = costs[largest]
    steps = ", ".join(f"{n:,}: {c[0]:.1f} ms (today {c[1]:,.0f} ms)" for n, c in costs.items())
    return [
        Row(
            f"/v1/audiences page of {PAGE_SIZE} at {largest:,} memberships, HTTP "
            f"({len(audiences):,} audiences; {steps})",
            f"{new:.1f} ms",
            f"today's SQL alone (count(*) per audience): {old:,.0f} ms",
            times(old / new),
            f"≤ {PAGE_TARGET_MS:g} ms",
            new <= PAGE_TARGET_MS,
        )
    ]


async def _read_all(edge: _Edge, audience: int, expected: int) -> float:
    """Seconds to read every member by the cursor; checks each came once, in order."""
    path = f"/v1/audiences/{audience}/memberships"
    seen: list[str] = []
    cursor: str | None = None
    began = time.perf_counter()
    while True:
        params = {"pageSize": str(PAGE_SIZE)} | ({"cursor": cursor} if cursor else {})
        page = await edge.get(path, **params)
        seen += [m["profileIntegrationId"] for m in page["data"]]
        if not page["hasMore"]:
            break
        cursor = page["cursor"]
    spent = time.perf_counter() - began
    if len(seen) != expected or len(set(seen)) != expected or seen != sorted(seen):
        raise RuntimeError(f"read {len(seen)} members ({len(set(seen))} distinct) of {expected}")
    return spent


async def _old_read_s(db: asyncpg.Pool, audience: int, members: int, samples: int) -> float:
    """Today's full read by OFFSET, extrapolated: each page costs a count and a scan to its
    offset, so the pages at ``samples`` evenly spread offsets stand for all of them."""
    pages = -(-members // PAGE_SIZE)
    spent = []
    for k in range(samples):
        offset = (pages * k // samples) * PAGE_SIZE

        async def page(offset: int = offset) -> None:
            async with db.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                await conn.fetchval(OLD_MEMBER_COUNT, audience)
                await conn.fetch(OLD_MEMBER_PAGE, audience, offset)

        spent.append(await _ms(page, tries=1) / 1000)
    return statistics.mean(spent) * pages


async def _old_clear_ms(db: asyncpg.Pool, audience: int) -> float:
    """Today's clear (every row deleted in one transaction, without today's count triggers),
    rolled back so the same rows serve the new clear."""
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            for trigger in COUNT_TRIGGERS:
                await conn.execute(f"ALTER TABLE memberships DISABLE TRIGGER {trigger}")
            began = time.perf_counter()
            await conn.execute(OLD_CLEAR[0], audience, 2**62)
            await conn.execute(OLD_CLEAR[1], audience, 2**62)
            return (time.perf_counter() - began) * 1000
        finally:
            await tx.rollback()


async def _big_audience_rows(svc: Services, edge: _Edge, sizes: Sizes) -> list[Row]:
    members = sizes.big_audience_members
    big = await svc.new_audience("big")
    await _load(svc.db, [big], 1, members)
    new_read = await _read_all(edge, big, members)
    old_read = await _old_read_s(svc.db, big, members, sizes.offset_samples)
    old_clear = await _old_clear_ms(svc.db, big)
    began = time.perf_counter()
    await edge.delete(f"/v2/audiences/{big}/memberships")
    clear_ms = (time.perf_counter() - began) * 1000
    listed = await edge.get(f"/v1/audiences/{big}/memberships", pageSize="1")
    if listed["totalResultSize"] != 0 or listed["data"]:
        raise RuntimeError(f"members left after the clear: {listed}")
    began = time.perf_counter()
    swept = 0
    while (batch := await sweep_once(svc.db)) is not None:
        swept += batch.deleted
    sweep_s = time.perf_counter() - began
    if swept != members:
        raise RuntimeError(f"swept {swept} rows of {members}")
    return [
        Row(
            f"full cursor read of a {members:,}-member audience, pages of {PAGE_SIZE}, HTTP",
            f"{new_read:.1f} s",
            f"today's OFFSET read, SQL alone, extrapolated from {sizes.offset_samples} pages: "
            f"{old_read:,.1f} s",
            times(old_read / new_read),
            f"≤ {READ_TARGET_S:g} s",
            new_read <= READ_TARGET_S,
        ),
        Row(
            f"clear of a {members:,}-member audience, HTTP (the workers' sweep then took "
            f"{sweep_s:.1f} s in batches of 1,000 rows)",
            f"{clear_ms:.1f} ms",
            f"today's one-transaction DELETE, SQL alone: {old_clear:,.0f} ms",
            times(old_clear / clear_ms),
            f"≤ {CLEAR_TARGET_MS:g} ms",
            clear_ms <= CLEAR_TARGET_MS,
        ),
    ]


async def postgres_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    await svc.reset()
    _, port, api_key = await start_edge(svc, children)
    headers = {"Authorization": f"ApiKey-v1 {api_key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        edge = _Edge(session, port)
        rows = await _page_rows(svc, edge, sizes)
        rows += await _big_audience_rows(svc, edge, sizes)
    await svc.reset()
    return rows
