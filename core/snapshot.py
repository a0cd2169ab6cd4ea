"""The queue snapshot, read one way for ``/v1/status``, both processes' ``/metrics`` and
``cohortsync-admin status``, so every view of the queue agrees. Its cost does not grow with the
audiences: totals are aggregates, and per-audience detail is read for one page."""

from __future__ import annotations

import time
from typing import Any, Protocol

from core.scripts import Scripts
from schemas.keys import CONFIG_RATE, CONFIG_WORKERS_RATE
from schemas.settings import Settings
from schemas.status import (
    DEFAULT_STATUS_PAGE_SIZE,
    ETA_EXACT_RANKS,
    QueueSnapshot,
    Status,
    StatusCursor,
    TenantLoad,
    TenantStatus,
    Totals,
    build_status,
    tenant_status,
)

# $2: one tenant's audiences, or (NULL) every tenant's.
LIVE_AMONG = (
    "SELECT id, name FROM audiences WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL"
    " AND ($2::bigint IS NULL OR tenant_id = $2)"
)
# Live audiences read at once while looking for those with nothing pending.
IDLE_BATCH = 500
LIVE_AFTER = (
    "SELECT id, name FROM audiences WHERE deleted_at IS NULL AND id > $1"
    " AND ($3::bigint IS NULL OR tenant_id = $3) ORDER BY id LIMIT $2"
)
TENANT_NAMES = "SELECT id, hostname FROM tenants WHERE id = ANY($1::bigint[])"
# Tenants with work shown on the fleet's status, busiest first.
TENANTS_SHOWN = 100


class Fetcher(Protocol):
    """An asyncpg pool or connection: both answer ``fetch``."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


async def read_snapshot(scripts: Scripts, top: int = 0, tenant: int | None = None) -> QueueSnapshot:
    """The queue now (as ``tenant`` sees it, or the fleet), with the counters of the ``top``
    audiences with the most pending."""
    page = await scripts.queue_state.busiest(top, tenant=tenant) if top > 0 else None
    ids = [a for a, _ in page.audiences] if page is not None else []
    return await scripts.queue_state(time.time(), ids, page, tenant)


async def read_tenants(scripts: Scripts, size: int = TENANTS_SHOWN) -> list[TenantLoad]:
    """The ``size`` tenants with the most pending: each one's totals and the rate its changes
    are dispatched at (None when no worker published one: the reader's settings apply)."""
    page = await scripts.queue_state.busiest_tenants(size)
    ids = [t for t, _ in page.audiences]
    if not ids:
        return []
    k = scripts.keys
    async with scripts.redis.pipeline(transaction=False) as pipe:
        pipe.hmget(k.tenant_rates, ids)
        pipe.hmget(k.config, [CONFIG_RATE, CONFIG_WORKERS_RATE])
        for t in ids:
            pipe.hmget(k.tenant(t).totals, list(Totals._fields[:5]))
            pipe.zcard(k.tenant(t).audiences_pending)
        replies = await pipe.execute()
    own, cfg = replies[0], replies[1]
    default = cfg[0] or cfg[1]
    found: list[TenantLoad] = []
    for i, t in enumerate(ids):
        values, with_work = replies[2 + 2 * i], replies[3 + 2 * i]
        accepted, applied, dropped, dead, pending = (int(v or 0) for v in values)
        totals = Totals(accepted, applied, dropped, dead, pending, int(with_work))
        rate = own[i].split(b":")[0] if own[i] else default
        found.append(TenantLoad(t, totals, int(rate) if rate is not None else None))
    return found


async def read_status(
    scripts: Scripts,
    db: Fetcher,
    settings: Settings,
    page_size: int = DEFAULT_STATUS_PAGE_SIZE,
    cursor: StatusCursor | None = None,
    tenant: int | None = None,
) -> Status:
    """One page of live audiences with their progress and ETA (those with pending changes,
    busiest first, then the others by id), and the queue as a whole: ``tenant``'s, at its own
    rate, or (None) the fleet's, with the tenants with work, busiest first."""
    names: dict[int, str] = {}
    page = None
    next_cursor: StatusCursor | None = None
    after_idle = 0
    if cursor is None or cursor.pending is not None:
        after = None
        if cursor is not None and cursor.pending is not None:
            after = (cursor.pending, cursor.audience_id)
        page = await scripts.queue_state.busiest(page_size, after, ETA_EXACT_RANKS, tenant)
        busy = [a for a, _ in page.audiences]
        # An audience deleted with changes still running is not shown (nor counted here).
        rows = await db.fetch(LIVE_AMONG, busy, tenant)
        live = {r["id"]: r["name"] for r in rows}
        names = {a: live[a] for a in busy if a in live}
        if len(page.audiences) == page_size:
            last, pending = page.audiences[-1]
            next_cursor = StatusCursor(pending, last)
    else:
        after_idle = cursor.audience_id
    if next_cursor is None and len(names) < page_size:
        idle, next_cursor = await _idle_audiences(
            scripts, db, after_idle, page_size - len(names), tenant
        )
        names.update(idle)
    snapshot = await scripts.queue_state(time.time(), names, page, tenant)
    tenants: list[TenantStatus] | None = None
    if tenant is None:
        found = await read_tenants(scripts)
        rows = await db.fetch(TENANT_NAMES, [t for t, _, _ in found])
        hostnames = {r["id"]: r["hostname"] for r in rows}
        tenants = [
            tenant_status(t, hostnames.get(t, ""), totals, rate, settings.rate_limit_per_minute)
            for t, totals, rate in found
        ]
    return build_status(snapshot, names, settings.rate_limit_per_minute, next_cursor, tenants)


async def _idle_audiences(
    scripts: Scripts, db: Fetcher, after: int, wanted: int, tenant: int | None
) -> tuple[dict[int, str], StatusCursor | None]:
    """Up to ``wanted`` live audiences with nothing pending, by id after ``after``, and the
    cursor after the last (None when no live audience is left). Postgres is read in batches,
    each checked against the audiences with work in one round trip: pages of idle audiences
    cost O(page) plus a round trip per IDLE_BATCH audiences with work passed over."""
    redis = scripts.redis
    pending_key = scripts.queue_state.pending_set(tenant)
    batch = max(wanted, IDLE_BATCH)
    found: dict[int, str] = {}
    while True:
        rows = await db.fetch(LIVE_AFTER, after, batch, tenant)
        scores = await redis.zmscore(pending_key, [r["id"] for r in rows]) if rows else []
        for row, score in zip(rows, scores, strict=True):
            if score is None:
                found[row["id"]] = row["name"]
                if len(found) == wanted:
                    return found, StatusCursor(None, row["id"])
        if len(rows) < batch:
            return found, None
        after = rows[-1]["id"]
