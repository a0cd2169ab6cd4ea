"""``dispatch.lua``'s call: read the next audiences' backlog heads, then move them into arq's queue.

The script may touch only keys its caller declares, and which backlogs and job keys a dispatch
touches depends on data (the active list, the entries' versions). So the caller reads first, in
two pipelined round trips: the queue's room and the head of the active list, then the head of
those audiences' backlogs; it builds every job, and the script checks that what was read still
holds before it moves anything. Three round trips per dispatch whatever the audiences, one when
there is no room or no work.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from redis.asyncio import Redis

from core.scripts.backlogs import aggregate_keys
from schemas.jobs import Change, change_job
from schemas.keys import APPLY_FUNCTION, Keys, decode_entry
from schemas.lua import source

# Longest a replica's dispatch turn lasts if it never ends it (it died between its reads and the
# script): far above a dispatch's few milliseconds, short enough not to stall the others long.
TURN_MS = 1000


class DispatchResult(NamedTuple):
    """What one dispatch did."""

    created: int
    dropped: int
    ready_before: int
    backlog_total: int
    # Stopped before the room was filled because what was read had changed (another replica
    # dispatched meanwhile) or was used up: worth asking again soon.
    short: bool = False


class Dispatch:
    """``dispatch.lua`` of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(source("dispatch"))

    async def __call__(self, watermark: int, batch: int, quantum: int) -> DispatchResult:
        """Move up to ``batch`` changes into arq's queue, ``quantum`` per audience per turn,
        while the jobs ready or running stay below ``watermark``."""
        k = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            # On this process's clock, as arq scores jobs; the script counts again on Redis's.
            pipe.zcount(k.queue, "-inf", int(time.time() * 1000))
            pipe.zcard(k.leases)
            pipe.get(k.backlog_total)
            pipe.lrange(k.active_list, 0, -(-batch // quantum) - 1)
            pipe.set(k.dispatch_turn, 1, nx=True, px=TURN_MS)
            queued, running, total, active, turn = await pipe.execute()
        ready = int(queued) + int(running)
        room = min(batch, watermark - ready)
        if room <= 0 or not active:
            if turn:
                await self._redis.delete(k.dispatch_turn)
            return DispatchResult(0, 0, ready, int(total or 0))
        if not turn:
            # Another replica is dispatching: its reads would make ours stale.
            return DispatchResult(0, 0, ready, int(total or 0), short=True)
        turns = -(-room // quantum)
        audiences = [a.decode() for a in active[:turns]]
        # Round-robin, each audience gets about turns / audiences turns of quantum entries.
        per_audience = quantum * -(-turns // len(audiences))
        async with self._redis.pipeline(transaction=False) as pipe:
            for audience in audiences:
                pipe.lrange(k.backlog(audience), 0, per_audience - 1)
            heads: list[list[bytes]] = await pipe.execute()
        script_keys = [k.queue, k.active_list, k.active_set, k.cleared, k.backlog_total, k.leases]
        job_keys: list[str] = []
        args: list[str | int | bytes] = [watermark, batch, quantum, len(audiences)]
        for audience, head in zip(audiences, heads, strict=True):
            script_keys += [k.backlog(audience), k.stats(audience)]
            args += [audience, len(head)]
            audience_id = int(audience)
            for raw in head:
                action, profile_id, version = decode_entry(raw.decode())
                job_id = k.job_id(audience, version)
                job_keys.append(k.job(job_id))
                change = Change(audience_id, profile_id, action == "add", version)
                args += [raw, version, job_id, change_job(APPLY_FUNCTION, change)]
        created, dropped, ready_before, total_after, short = await self._script(
            keys=[*script_keys, *job_keys, *aggregate_keys(k), k.dispatch_turn], args=args
        )
        return DispatchResult(
            int(created), int(dropped), int(ready_before), int(total_after), bool(short)
        )
