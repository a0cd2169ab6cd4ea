"""Group commit: the changes of concurrent jobs go to Postgres together, one statement per batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, NamedTuple

from redis.asyncio import Redis

from schemas import keys
from schemas.jobs import Change
from worker.errors import describe, is_transient

logger = logging.getLogger(__name__)

# A change wins only over an older stored version, and only while its audience is live and was
# not cleared at or after its version. Rows are locked in one order, so concurrent batches and
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
        WHERE m.version < EXCLUDED.version
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
# The applied/dropped counters are written at most this often (they feed dashboards).
COUNTS_EVERY_S = 0.05


class _Waiting(NamedTuple):
    change: Change
    done: asyncio.Future[bool]


class Applier:
    """``await applier.apply(change)``: True once committed, False if stale or superseded.

    Calls arriving together are flushed as one batch after ``delay_s`` or at ``max_rows``,
    whichever comes first (later while ``MAX_IN_FLIGHT`` batches are committing); each caller
    returns once its batch committed and gets the batch's error if it did not.
    """

    def __init__(self, pool: Any, redis: Redis, *, max_rows: int, delay_s: float) -> None:
        self._pool = pool
        self._redis = redis
        self._max_rows = max_rows
        self._delay_s = delay_s
        self._pending: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False
        self._flushes: set[asyncio.Task[None]] = set()
        # Connections kept between batches: taking one from the pool costs more than the batch.
        self._idle: list[Any] = []
        # Counters gather here between writes.
        self._counts: Counter[tuple[int, str]] = Counter()
        self._counting: asyncio.Task[None] | None = None
        self.statements = 0

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
        if self._counting is not None:
            await self._counting
        while self._idle:
            await self._pool.release(self._idle.pop())

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
            applied = await self._upsert([w.change for w in winners.values()])
        except Exception as e:
            if is_transient(e) or len(winners) == 1:
                _fail(batch, e)
                return
            # One bad row must not fail its neighbours: find it by trying each row alone.
            applied = set()
            for key, w in winners.items():
                try:
                    applied |= await self._upsert([w.change])
                except Exception as row_error:
                    _fail([x for x in batch if _key(x) == key], row_error)
        for w in batch:
            if w.done.done():
                continue
            won = winners[_key(w)] is w and _key(w) in applied
            w.done.set_result(won)
            self._counts[w.change.audience_id, "applied" if won else "dropped"] += 1
        if self._counts and (self._counting is None or self._counting.done()):
            self._counting = asyncio.create_task(self._write_counts())

    async def _upsert(self, changes: list[Change]) -> set[Key]:
        self.statements += 1
        conn = self._idle.pop() if self._idle else await self._pool.acquire()
        try:
            rows = await conn.fetch(
                UPSERT,
                [c.audience_id for c in changes],
                [c.profile_id for c in changes],
                [c.member for c in changes],
                [c.version for c in changes],
            )
        except BaseException:
            # The pool closes a broken connection and opens a fresh one when next asked.
            await self._pool.release(conn)
            raise
        self._idle.append(conn)
        return {(r[0], r[1]) for r in rows}

    async def _write_counts(self) -> None:
        while self._counts:
            counts, self._counts = self._counts, Counter()
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (audience_id, field), n in counts.items():
                        pipe.hincrby(keys.stats_key(audience_id), field, n)
                    applied = sum(n for (_, field), n in counts.items() if field == "applied")
                    if applied:
                        # The measured rate (cohortsync-admin status, /v1/status) sums these.
                        second = keys.applied_second_key(int(time.time()))
                        pipe.incrby(second, applied)
                        pipe.expire(second, keys.APPLIED_SECOND_TTL_S)
                    await pipe.execute()
            except Exception as e:
                # Counters feed dashboards; the rows are committed, so the jobs still succeed.
                logger.warning("could not update applied/dropped counters: %s", describe(e))
            await asyncio.sleep(COUNTS_EVERY_S)


def _key(w: _Waiting) -> Key:
    return (w.change.audience_id, w.change.profile_id)


def _fail(batch: list[_Waiting], error: Exception) -> None:
    for w in batch:
        if not w.done.done():
            w.done.set_exception(error)
