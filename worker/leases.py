"""Leases on running jobs: claim, renew and finish, each one script call built and parsed here.

A replica holds each job it runs by a short lease (``LEASE_S``) that it renews while the job
runs; a replica that dies stops renewing, and its jobs are claimable by any other within one
lease, however long ``COHORTSYNC_JOB_TIMEOUT_S`` is. Finishing a job counts its outcome in
the same step, once per job whichever run finishes it.
"""

from __future__ import annotations

import time
from typing import Literal, NamedTuple

from redis.asyncio import Redis

from schemas import keys
from schemas.lua import source

# Short enough that a dead replica's jobs run again within seconds; renewed four times per
# lease, so a replica keeps its jobs through a Redis hiccup or event-loop stall of seconds.
LEASE_S = 10.0
RENEW_EVERY_S = LEASE_S / 4
# Lapsed leases one claim puts back on the queue (a dead replica held at most its max_jobs).
MAX_LAPSED_PER_CLAIM = 1000

Outcome = Literal["applied", "dropped", "dead"]


class Finished(NamedTuple):
    """How a job's run ended, kept until the worker finishes the job in Redis."""

    audience_id: int
    outcome: Outcome
    # The dead letter (JSON) when the outcome is dead.
    letter: bytes = b""


class Claimed(NamedTuple):
    job_id: str
    score: int


class Leases:
    """The lease scripts of one queue, registered once per Redis client."""

    def __init__(self, redis: Redis, queue_name: str) -> None:
        self._claim = redis.register_script(source("claim"))
        self._renew = redis.register_script(source("renew"))
        self._finish = redis.register_script(source("finish"))
        self._queue = queue_name

    async def claim(self, room: int) -> list[Claimed]:
        """Lease up to ``room`` due jobs, oldest first (after returning lapsed leases to the
        queue, which ``room`` 0 does alone)."""
        reply = await self._claim(
            keys=[self._queue, keys.LEASES],
            args=[max(room, 0), int(LEASE_S * 1000), MAX_LAPSED_PER_CLAIM],
        )
        return [
            Claimed(raw.decode(), int(float(score)))
            for raw, score in zip(reply[::2], reply[1::2], strict=True)
        ]

    async def renew(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        renewed: int = await self._renew(keys=[keys.LEASES], args=[int(LEASE_S * 1000), *job_ids])
        return renewed

    async def finish(
        self, job_id: str, audience_id: int, outcome: Outcome, letter: bytes = b""
    ) -> bool:
        """Remove the job and count ``outcome`` (keeping ``letter`` when it is dead); False if
        another run had finished it."""
        counted: int = await self._finish(
            keys=self._finish_keys(job_id, audience_id),
            args=[job_id, "done", outcome, 0, keys.APPLIED_SECOND_TTL_S, letter],
        )
        return bool(counted)

    async def retry(self, job_id: str, due_ms: int) -> bool:
        """Give the job back to the queue, due at ``due_ms`` (Unix ms); False if another run
        had finished it."""
        requeued: int = await self._finish(
            keys=self._finish_keys(job_id, 0),
            args=[job_id, "retry", "", due_ms, keys.APPLIED_SECOND_TTL_S, b""],
        )
        return bool(requeued)

    def _finish_keys(self, job_id: str, audience_id: int) -> list[str]:
        return [
            self._queue,
            keys.LEASES,
            keys.ARQ_JOB_PREFIX + job_id,
            keys.ARQ_RETRY_PREFIX + job_id,
            keys.stats_key(audience_id),
            keys.applied_second_key(int(time.time())),
            keys.DEAD_LETTERS,
        ]
