"""The queue snapshot, read one way for ``/v1/status``, the edge's ``/metrics`` and
``cohortsync-admin status`` (``queue_state.lua``), so every view of the queue agrees."""

from __future__ import annotations

import time
from typing import Any, Protocol

from redis.commands.core import AsyncScript

from schemas.settings import Settings
from schemas.status import (
    QueueSnapshot,
    Status,
    build_status,
    parse_snapshot,
    snapshot_args,
    snapshot_keys,
)

LIVE_AUDIENCES = "SELECT id, name FROM audiences WHERE deleted_at IS NULL ORDER BY id"


class Fetcher(Protocol):
    """An asyncpg pool or connection: both answer ``fetch``."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


async def read_snapshot(
    queue_state: AsyncScript, settings: Settings, audience_ids: list[int] | None = None
) -> QueueSnapshot:
    """The queue now: the active audiences, plus ``audience_ids``."""
    reply = await queue_state(
        keys=snapshot_keys(settings.queue_name),
        args=snapshot_args(time.time(), audience_ids or ()),
    )
    return parse_snapshot(reply)


async def read_status(queue_state: AsyncScript, db: Fetcher, settings: Settings) -> Status:
    """Every live audience (a few per operator, not per user: one query, one script call) with
    its progress and ETA, and the queue as a whole."""
    rows = await db.fetch(LIVE_AUDIENCES)
    names: dict[int, str] = {r["id"]: r["name"] for r in rows}
    snapshot = await read_snapshot(queue_state, settings, list(names))
    return build_status(snapshot, names, settings.rate_limit_per_minute)
