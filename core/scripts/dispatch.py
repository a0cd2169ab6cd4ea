"""``dispatch.lua``'s call: read the next audiences' backlog heads, then move them into arq's queue.

The script may touch only keys its caller declares, and which backlogs and job keys a dispatch
touches depends on data (the active list, the entries' versions). So the caller reads first, in
two pipelined round trips: the queue's room, the head of the active list and what is left
of its turn, then the head of those audiences' backlogs. It names every job key; the script
checks that what was read still holds, then writes the jobs (arq's payload, built from the
entries it pops). Three round trips per dispatch whatever the audiences, one when there is no
room or no work.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from redis.asyncio import Redis

from core.scripts.backlogs import aggregate_keys
from schemas.keys import APPLY_FUNCTION, ARQ_JOB_PREFIX, Keys, decode_entry
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
            # One audience more than whole turns fill a batch: the head's may be cut short.
            pipe.lrange(k.active_list, 0, -(-batch // quantum))
            pipe.get(k.dispatch_credit)
            pipe.set(k.dispatch_turn, 1, nx=True, px=TURN_MS)
            queued, running, total, active, credit, turn = await pipe.execute()
        ready = int(queued) + int(running)
        room = min(batch, watermark - ready)
        if room <= 0 or not active:
            if turn:
                await self._redis.delete(k.dispatch_turn)
            return DispatchResult(0, 0, ready, int(total or 0))
        if not turn:
            # Another replica is dispatching: its reads would make ours stale.
            return DispatchResult(0, 0, ready, int(total or 0), short=True)
        wanted = turns(
            [a.decode() for a in active], room, quantum, credit.decode() if credit else ""
        )
        audiences = list(wanted)
        async with self._redis.pipeline(transaction=False) as pipe:
            for audience, entries in wanted.items():
                pipe.lrange(k.backlog(audience), 0, entries - 1)
            heads: list[list[bytes]] = await pipe.execute()
        script_keys = [
            k.queue,
            k.active_list,
            k.active_set,
            k.cleared,
            k.backlog_total,
            k.leases,
            k.dispatch_credit,
        ]
        job_keys: list[str] = []
        args: list[str | int | bytes] = [
            watermark,
            batch,
            quantum,
            len(audiences),
            APPLY_FUNCTION,
            ARQ_JOB_PREFIX,
        ]
        for audience, head in zip(audiences, heads, strict=True):
            script_keys += [k.backlog(audience), k.stats(audience)]
            args += [audience, len(head), head[0] if head else ""]
            for raw in head:
                version = decode_entry(raw.decode())[2]
                job_keys.append(k.job(k.job_id(audience, version)))
        created, dropped, ready_before, total_after, short = await self._script(
            keys=[*script_keys, *job_keys, *aggregate_keys(k), k.dispatch_turn], args=args
        )
        return DispatchResult(
            int(created), int(dropped), int(ready_before), int(total_after), bool(short)
        )


def turns(active: list[str], room: int, quantum: int, credit: str) -> dict[str, int]:
    """How many entries each audience at the head of the round-robin takes to fill ``room``,
    the turns as ``dispatch.lua`` will take them: the head's turn is what is left of it
    (``credit``, ``<audience>:<entries>``) or a whole quantum, every later turn a quantum."""
    holder, _, left = credit.partition(":")
    turn = int(left) if active and holder == active[0] else quantum
    wanted: dict[str, int] = {}
    i = 0
    while room > 0:
        audience = active[i % len(active)]
        take = min(turn, room)
        wanted[audience] = wanted.get(audience, 0) + take
        room -= take
        turn = quantum
        i += 1
    return wanted
