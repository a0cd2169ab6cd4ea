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

from core.scripts.backlogs import aggregate_keys
from schemas.keys import APPLIED_SECOND_TTL_S, DEFAULT_TENANT, Keys
from schemas.lua import source

# Short enough that a dead replica's jobs run again within seconds; renewed four times per
# lease, so a replica keeps its jobs through a Redis hiccup or event-loop stall of seconds.
LEASE_S = 10.0
# Lapsed leases one claim puts back on the queue (a dead replica held at most its max_jobs).
MAX_LAPSED_PER_CLAIM = 1000

Outcome = Literal["applied", "dropped", "dead"]


class Claimed(NamedTuple):
    job_id: str
    score: int


class Leases:
    """The lease scripts of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._claim = redis.register_script(source("claim"))
        self._renew = redis.register_script(source("renew"))
        self._finish = redis.register_script(source("finish"))

    async def claim(self, room: int) -> list[Claimed]:
        """Lease up to ``room`` due jobs, oldest first (after returning lapsed leases to the
        queue, which ``room`` 0 does alone)."""
        reply = await self._claim(
            keys=[self._keys.queue, self._keys.leases],
            args=[max(room, 0), int(LEASE_S * 1000), MAX_LAPSED_PER_CLAIM],
        )
        return [
            Claimed(raw.decode(), int(float(score)))
            for raw, score in zip(reply[::2], reply[1::2], strict=True)
        ]

    async def renew(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        renewed = await self._renew(keys=[self._keys.leases], args=[int(LEASE_S * 1000), *job_ids])
        return int(renewed)

    async def finish(
        self,
        job_id: str,
        audience_id: int,
        outcome: Outcome,
        letter: bytes = b"",
        tenant: int = DEFAULT_TENANT,
    ) -> bool:
        """Remove the job and count ``outcome`` for the audience of ``tenant`` (keeping
        ``letter`` when it is dead); False if another run had finished it."""
        counted = await self._finish(
            keys=self._finish_keys(job_id, audience_id, tenant),
            args=[job_id, "done", outcome, 0, APPLIED_SECOND_TTL_S, letter, audience_id, tenant],
        )
        return bool(counted)

    async def retry(self, job_id: str, due_ms: int) -> bool:
        """Give the job back to the queue, due at ``due_ms`` (Unix ms); False if another run
        had finished it."""
        requeued = await self._finish(
            keys=self._finish_keys(job_id, 0, DEFAULT_TENANT),
            args=[job_id, "retry", "", due_ms, APPLIED_SECOND_TTL_S, b"", 0, DEFAULT_TENANT],
        )
        return bool(requeued)

    def _finish_keys(self, job_id: str, audience_id: int, tenant: int) -> list[str]:
        k = self._keys
        second = int(time.time())
        return [
            k.queue,
            k.leases,
            k.job(job_id),
            k.retry(job_id),
            k.stats(audience_id),
            k.applied_second(second),
            k.dead_letters,
            k.backlog(audience_id),
            *aggregate_keys(k, tenant),
            k.tenant(tenant).applied_second(second),
        ]
