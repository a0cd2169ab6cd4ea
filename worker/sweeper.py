"""The sweeper: deletes the membership rows clears and deletes superseded, a batch at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, NamedTuple

from worker.errors import describe, raise_if_cancelled

logger = logging.getLogger(__name__)

# Rows one transaction walks (and at most deletes): its locks and its time stay small.
BATCH_ROWS = 1000
# Nothing to sweep: look again after this long.
IDLE_S = 1.0
MAX_BACKOFF_S = 5.0

# Another replica sweeping an audience holds its row: this one takes the next audience.
_TAKE_SQL = """SELECT audience_id, up_to_version, after_profile_id FROM membership_sweeps
    ORDER BY audience_id LIMIT 1 FOR UPDATE SKIP LOCKED"""
# The next rows in primary-key order; of those, the superseded ones go. A row a batch holds is
# skipped (SKIP LOCKED), so the sweeper waits for no row and never joins a cycle of waits with a
# batch and a clear; the window is walked again until nothing in it was skipped.
_SWEEP_SQL = """WITH walked AS (
        SELECT profile_id, version FROM memberships
        WHERE audience_id = $1 AND profile_id > $2
        ORDER BY profile_id LIMIT $4
    ), superseded AS (
        SELECT profile_id FROM memberships
        WHERE audience_id = $1 AND version <= $3
          AND profile_id IN (SELECT profile_id FROM walked WHERE version <= $3)
        FOR UPDATE SKIP LOCKED
    ), deleted AS (
        DELETE FROM memberships
        WHERE audience_id = $1 AND profile_id IN (SELECT profile_id FROM superseded)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM walked) AS walked,
           (SELECT max(profile_id) FROM walked) AS last,
           (SELECT count(*) FROM walked WHERE version <= $3) AS seen,
           (SELECT count(*) FROM deleted) AS deleted"""


class Swept(NamedTuple):
    audience_id: int
    deleted: int
    # The audience's pass reached its end in this batch.
    done: bool


async def sweep_once(pool: Any, batch_rows: int = BATCH_ROWS) -> Swept | None:
    """One batch of one audience's sweep, in one short transaction; None when nothing waits."""
    async with pool.acquire() as conn, conn.transaction():
        sweep = await conn.fetchrow(_TAKE_SQL)
        if sweep is None:
            return None
        audience_id = sweep["audience_id"]
        found = await conn.fetchrow(
            _SWEEP_SQL, audience_id, sweep["after_profile_id"], sweep["up_to_version"], batch_rows
        )
        # A superseded row seen but not deleted was held by a batch (or has just been rewritten
        # with a newer version): the same window again next time.
        if found["deleted"] < found["seen"]:
            return Swept(audience_id, found["deleted"], False)
        done = found["walked"] < batch_rows
        if done:
            await conn.execute("DELETE FROM membership_sweeps WHERE audience_id = $1", audience_id)
        else:
            await conn.execute(
                "UPDATE membership_sweeps SET after_profile_id = $2 WHERE audience_id = $1",
                audience_id,
                found["last"],
            )
    return Swept(audience_id, found["deleted"], done)


class Sweeper:
    """One per replica; replicas share the work audience by audience (SKIP LOCKED)."""

    def __init__(self, pool: Any, batch_rows: int = BATCH_ROWS) -> None:
        self._pool = pool
        self._batch_rows = batch_rows
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def run(self) -> None:
        """Sweep until cancelled; Postgres errors are logged and waited out, never fatal."""
        failures = 0
        while not self._stopping:
            try:
                swept = await sweep_once(self._pool, self._batch_rows)
            except Exception as e:
                raise_if_cancelled(e)
                failures += 1
                if failures == 1:
                    logger.warning("sweeping failed, retrying with back-off: %s", describe(e))
                await asyncio.sleep(min(MAX_BACKOFF_S, 0.05 * 2 ** min(failures, 10)))
                continue
            failures = 0
            if swept is None:
                await asyncio.sleep(IDLE_S)
            else:
                if swept.done:
                    logger.info("swept audience %d's superseded memberships", swept.audience_id)
                # Give the jobs of this process their turn between two batches.
                await asyncio.sleep(0)

    def start(self) -> None:
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="cohortsync-sweeper")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
