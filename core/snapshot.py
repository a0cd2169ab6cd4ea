"""The queue snapshot, read one way for ``/v1/status``, both processes' ``/metrics`` and
``cohortsync-admin status``, so every view of the queue agrees."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from core.scripts import Scripts
from schemas.settings import Settings
from schemas.status import QueueSnapshot, Status, build_status

LIVE_AUDIENCES = "SELECT id, name FROM audiences WHERE deleted_at IS NULL ORDER BY id"


class Fetcher(Protocol):
    """An asyncpg pool or connection: both answer ``fetch``."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


async def read_snapshot(scripts: Scripts, audience_ids: Iterable[int] = ()) -> QueueSnapshot:
    """The queue now: the active audiences, plus ``audience_ids``."""
    return await scripts.queue_state(time.time(), audience_ids)


async def read_status(scripts: Scripts, db: Fetcher, settings: Settings) -> Status:
    """Every live audience (a few per operator, not per user: one query, one snapshot) with
    its progress and ETA, and the queue as a whole."""
    rows = await db.fetch(LIVE_AUDIENCES)
    names: dict[int, str] = {r["id"]: r["name"] for r in rows}
    snapshot = await read_snapshot(scripts, names)
    return build_status(snapshot, names, settings.rate_limit_per_minute)
