"""The queue snapshot, read one way for ``/v1/status``, both processes' ``/metrics`` and
``cohortsync-admin status``, so every view of the queue agrees. Its cost does not grow with the
audiences: totals are aggregates, and per-audience detail is read for one page."""

from __future__ import annotations

import time
from typing import Any, Protocol

from core.scripts import Scripts
from schemas.settings import Settings
from schemas.status import (
    DEFAULT_STATUS_PAGE_SIZE,
    ETA_EXACT_RANKS,
    QueueSnapshot,
    Status,
    StatusCursor,
    build_status,
)

LIVE_AMONG = "SELECT id, name FROM audiences WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL"
# Live audiences read at once while looking for those with nothing pending.
IDLE_BATCH = 500
LIVE_AFTER = (
    "SELECT id, name FROM audiences WHERE deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
)


class Fetcher(Protocol):
    """An asyncpg pool or connection: both answer ``fetch``."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


async def read_snapshot(scripts: Scripts, top: int = 0) -> QueueSnapshot:
    """The queue now, with the counters of the ``top`` audiences with the most pending."""
    page = await scripts.queue_state.busiest(top) if top > 0 else None
    ids = [a for a, _ in page.audiences] if page is not None else []
    return await scripts.queue_state(time.time(), ids, page)


async def read_status(
    scripts: Scripts,
    db: Fetcher,
    settings: Settings,
    page_size: int = DEFAULT_STATUS_PAGE_SIZE,
    cursor: StatusCursor | None = None,
) -> Status:
    """One page of live audiences with their progress and ETA (those with pending changes,
    busiest first, then the others by id), and the queue as a whole."""
    names: dict[int, str] = {}
    page = None
    next_cursor: StatusCursor | None = None
    after_idle = 0
    if cursor is None or cursor.pending is not None:
        after = None
        if cursor is not None and cursor.pending is not None:
            after = (cursor.pending, cursor.audience_id)
        page = await scripts.queue_state.busiest(page_size, after, ETA_EXACT_RANKS)
        busy = [a for a, _ in page.audiences]
        # An audience deleted with changes still running is not shown (nor counted here).
        rows = await db.fetch(LIVE_AMONG, busy)
        live = {r["id"]: r["name"] for r in rows}
        names = {a: live[a] for a in busy if a in live}
        if len(page.audiences) == page_size:
            last, pending = page.audiences[-1]
            next_cursor = StatusCursor(pending, last)
    else:
        after_idle = cursor.audience_id
    if next_cursor is None and len(names) < page_size:
        idle, next_cursor = await _idle_audiences(scripts, db, after_idle, page_size - len(names))
        names.update(idle)
    snapshot = await scripts.queue_state(time.time(), names, page)
    return build_status(snapshot, names, settings.rate_limit_per_minute, next_cursor)


async def _idle_audiences(
    scripts: Scripts, db: Fetcher, after: int, wanted: int
) -> tuple[dict[int, str], StatusCursor | None]:
    """Up to ``wanted`` live audiences with nothing pending, by id after ``after``, and the
    cursor after the last (None when no live audience is left). Postgres is read in batches,
    each checked against the audiences with work in one round trip: pages of idle audiences
    cost O(page) plus a round trip per IDLE_BATCH audiences with work passed over."""
    redis, pending_key = scripts.redis, scripts.keys.audiences_pending
    batch = max(wanted, IDLE_BATCH)
    found: dict[int, str] = {}
    while True:
        rows = await db.fetch(LIVE_AFTER, after, batch)
        scores = await redis.zmscore(pending_key, [r["id"] for r in rows]) if rows else []
        for row, score in zip(rows, scores, strict=True):
            if score is None:
                found[row["id"]] = row["name"]
                if len(found) == wanted:
                    return found, StatusCursor(None, row["id"])
        if len(rows) < batch:
            return found, None
        after = rows[-1]["id"]
