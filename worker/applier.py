"""Group commit: the changes of concurrent jobs go to Postgres together, one statement per batch."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

from schemas.jobs import Change
from worker.errors import backoff_s, describe, is_retried

logger = logging.getLogger(__name__)

# A change wins only over an older stored version, and only while its audience is live and was
# not cleared at or after its version. The same version again is the same change re-run (its
# job ran before and the replica died before finishing it): written again, so it counts as
# applied, not as stale. Rows are locked in one order, so concurrent batches and
# clears never wait for each other in a cycle: membership rows by key (ORDER BY), then the
# audience rows by id (the locking sub-select; left to the planner, a set of audiences is
# walked in hash order, which differs from one set to another).
UPSERT = """
WITH applied AS (
    INSERT INTO memberships AS m (audience_id, profile_id, member, version)
    SELECT u.audience_id, u.profile_id, u.member, u.version
    FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::bigint[])
        AS u (audience_id, profile_id, member, version)
    JOIN audiences a
        ON a.id = u.audience_id AND a.deleted_at IS NULL AND a.cleared_version < u.version
    ORDER BY u.audience_id, u.profile_id
    ON CONFLICT (audience_id, profile_id) DO UPDATE
        SET member = EXCLUDED.member, version = EXCLUDED.version, updated_at = now()
        WHERE m.version <= EXCLUDED.version
    RETURNING m.audience_id, m.profile_id
), touched AS (
    UPDATE audiences SET last_update = now()
    WHERE id IN (
        SELECT id FROM audiences WHERE id IN (SELECT audience_id FROM applied)
        ORDER BY id FOR NO KEY UPDATE
    )
)
SELECT audience_id, profile_id FROM applied
"""

Key = tuple[int, str]

# Batches committing at once; a batch that is due meanwhile goes when one of them is done.
MAX_IN_FLIGHT = 2
# While Postgres is away a batch is retried in place; say so once per this interval.
RETRY_LOG_INTERVAL_S = 10.0
# Longest pause between two tries of a batch while Postgres is away.
MAX_RETRY_S = 5.0


class _Waiting(NamedTuple):
    change: Change
    done: asyncio.Future[bool]


class Applier:
    """``await applier.apply(change)``: True once committed, False if stale or superseded.

    Calls arriving together are flushed as one batch after ``delay_s`` or at ``max_rows``,
    whichever comes first (later while ``MAX_IN_FLIGHT`` batches are committing); each caller
    returns once its batch committed. A transient failure (Postgres restarting, a connection
    reset, a deadlock) is retried in place with back-off for as long as any caller still waits,
    so an outage costs no rate-limit slots and no dead letters; a permanent one fails only the
    rows that cause it.
    """

    def __init__(self, pool: Any, *, max_rows: int, delay_s: float) -> None:
        self._pool = pool
        self._max_rows = max_rows
        self._delay_s = delay_s
        self._pending: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._last_retry_log = 0.0
        self.statements = 0
        # The transient failure batches are being retried for, while they are.
        self.problem: str | None = None

    async def apply(self, change: Change) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._pending.append(_Waiting(change, done))
        if len(self._pending) >= self._max_rows:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._delay_s, self._flush)
        # A cancelled job cancels only its own future; its row is still part of the batch.
        return await done

    async def close(self) -> None:
        """Flush what is waiting and wait for every batch in flight."""
        while self._pending or self._flushes:
            self._flush()
            await asyncio.gather(*self._flushes, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        if len(self._flushes) >= MAX_IN_FLIGHT:
            self._due = True
            return
        self._due = False
        batch = self._pending[: self._max_rows]
        del self._pending[: self._max_rows]
        task = asyncio.create_task(self._commit(batch))
        self._flushes.add(task)
        task.add_done_callback(self._committed)

    def _committed(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        if self._due or len(self._pending) >= self._max_rows:
            self._flush()
        elif self._pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._flush)

    async def _commit(self, batch: list[_Waiting]) -> None:
        # ON CONFLICT cannot touch a row twice in one statement: the newest change per profile
        # goes, the others are stale already.
        winners: dict[Key, _Waiting] = {}
        for w in batch:
            key = (w.change.audience_id, w.change.profile_id)
            best = winners.get(key)
            if best is None or w.change.version > best.change.version:
                winners[key] = w
        try:
            applied = await self._upsert_retrying(batch, [w.change for w in winners.values()])
        except Exception as e:
            if is_retried(e) or len(winners) == 1:
                _fail(batch, e)
                return
            # One bad row must not fail its neighbours: find it by trying each row alone.
            applied = set()
            for key, w in winners.items():
                try:
                    applied |= await self._upsert_retrying([w], [w.change])
                except Exception as row_error:
                    _fail([x for x in batch if _key(x) == key], row_error)
        for w in batch:
            if w.done.done():
                continue
            w.done.set_result(winners[_key(w)] is w and _key(w) in applied)

    async def _upsert_retrying(self, waiting: list[_Waiting], changes: list[Change]) -> set[Key]:
        """``_upsert``, retried while its failure is transient and a caller still waits;
        raises a permanent failure, or the transient one once every caller has gone."""
        failures = 0
        while True:
            try:
                applied = await self._upsert(changes)
            except Exception as e:
                if not is_retried(e) or all(w.done.done() for w in waiting):
                    raise
                self.problem = describe(e)
                failures += 1
                now = time.monotonic()
                if now - self._last_retry_log >= RETRY_LOG_INTERVAL_S:
                    self._last_retry_log = now
                    logger.warning(
                        "a batch of %d changes is retried with back-off: %s",
                        len(changes),
                        describe(e),
                    )
                await asyncio.sleep(min(backoff_s(failures), MAX_RETRY_S))
            else:
                self.problem = None
                return applied

    async def _upsert(self, changes: list[Change]) -> set[Key]:
        self.statements += 1
        # A connection of its own for each statement: one that failed mid-statement is closed,
        # never handed to the next batch in an unknown state.
        async with self._pool.acquire() as conn:
            try:
                rows = await conn.fetch(
                    UPSERT,
                    [c.audience_id for c in changes],
                    [c.profile_id for c in changes],
                    [c.member for c in changes],
                    [c.version for c in changes],
                )
            except BaseException as e:
                if not isinstance(e, Exception) or is_retried(e):
                    conn.terminate()
                raise
        return {(r[0], r[1]) for r in rows}


def _key(w: _Waiting) -> Key:
    return (w.change.audience_id, w.change.profile_id)


def _fail(batch: list[_Waiting], error: Exception) -> None:
    for w in batch:
        if not w.done.done():
            w.done.set_exception(error)
