"""``dispatch.lua``'s call: read the tenants due and their audiences' backlog heads, then move
them into arq's queue, each change due at its slot of its tenant's rate.

The script may touch only keys its caller declares, and which backlogs and job keys a dispatch
touches depends on data (the tenants with work, their active lists, the entries' versions). So
the caller reads first, in three pipelined round trips: the queue's room and the tenants due
within the horizon; the head of their active lists, what is left of their turns and their
rate limiters' state; then the head of those audiences' backlogs. It shares the room out among
the tenants (equal turns, none past the slots its rate leaves it), names every job key, and the
script checks that what was read still holds, then writes the jobs (arq's payload, built from
the entries it pops). Four round trips per dispatch whatever the audiences or tenants, one
when there is no room or no work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from redis.asyncio import Redis

from core.scripts.backlogs import aggregate_keys
from schemas.keys import APPLY_FUNCTION, ARQ_JOB_PREFIX, Keys, decode_entry
from schemas.lua import source

# Longest a replica's dispatch turn lasts if it never ends it (it died between its reads and the
# script): far above a dispatch's few milliseconds, short enough not to stall the others long.
TURN_MS = 1000
# How far ahead a tenant's changes are queued at their slots: a change arriving now for a
# tenant at its limit waits at most this long behind the tenant's earlier ones, and a rate
# changed at runtime applies to every change queued after this long.
HORIZON_S = 2.0
# Most tenants one dispatch serves: the rest keep their place for the next.
MAX_TENANTS = 64
# Part of a burst kept back for changes committing a little after their slot and bunching up
# (a worker that claims late commits them with the next ones): measured 2-4 slots of 10 ms at
# 6000/min on a loaded 2-core machine.
COMMIT_JITTER_US = 50_000


class Rate(NamedTuple):
    """A rate limit: ``per_minute`` changes (0: unlimited), ``burst`` of them at once."""

    per_minute: int
    burst: int

    def gcra(self) -> tuple[float, float]:
        """(µs between slots, tolerance µs) of the GCRA enforcing it; (0, 0) when unlimited."""
        if self.per_minute <= 0:
            return 0.0, 0.0
        interval = 60_000_000 / self.per_minute
        return interval, max(0.0, (max(self.burst, 1) - 1) * interval - COMMIT_JITTER_US)

    def slots(self, last: bytes | None, now_us: float, until_us: float) -> int:
        """How many slots from ``now_us`` to ``until_us`` a GCRA whose last slot given was
        ``last`` still has (UNBOUNDED when unlimited)."""
        interval, tolerance = self.gcra()
        if not interval:
            return UNBOUNDED
        # Theoretical slots from the next (down to the tolerance in the past: the burst), each
        # due at the latest of it and now.
        after = float(last) + interval if last is not None else 0.0
        first = max(after, now_us - tolerance)
        return 0 if first > until_us else int((until_us - first) // interval) + 1


UNBOUNDED = 1 << 40
UNLIMITED = Rate(0, 0)


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

    async def __call__(
        self,
        watermark: int,
        batch: int,
        quantum: int,
        rate_of: Callable[[int], Rate] = lambda _: UNLIMITED,
        fleet: Rate = UNLIMITED,
        horizon_s: float = HORIZON_S,
    ) -> DispatchResult:
        """Move up to ``batch`` changes into arq's queue, each due at its slot of its tenant's
        rate (``rate_of(tenant)``) and of the ``fleet``'s, ``quantum`` per audience per turn,
        while the jobs ready or running stay below ``watermark``."""
        k = self._keys
        now_ms = int(time.time() * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            # On this process's clock, as arq scores jobs; the script counts again on Redis's.
            pipe.zcount(k.queue, "-inf", now_ms)
            pipe.zcard(k.leases)
            pipe.get(k.backlog_total)
            pipe.zrangebyscore(
                k.tenants_due, "-inf", now_ms + int(horizon_s * 1000), 0, MAX_TENANTS
            )
            pipe.get(k.fleet_limiter)
            pipe.set(k.dispatch_turn, 1, nx=True, px=TURN_MS)
            queued, running, total, due, fleet_state, turn = await pipe.execute()
        ready = int(queued) + int(running)
        room = min(batch, watermark - ready)
        if room <= 0 or not due:
            if turn:
                await self._redis.delete(k.dispatch_turn)
            return DispatchResult(0, 0, ready, int(total or 0))
        if not turn:
            # Another replica is dispatching: its reads would make ours stale.
            return DispatchResult(0, 0, ready, int(total or 0), short=True)
        tenants = [int(t) for t in due]
        # Whole turns filling a tenant's part of the room, and one audience more: the head's
        # turn may be cut short.
        heads = -(-room // len(tenants)) // quantum + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                tk = k.tenant(tenant)
                pipe.lrange(tk.active_list, 0, heads)
                pipe.get(tk.dispatch_credit)
                pipe.get(tk.limiter)
            read = await pipe.execute()
        now_us = time.time() * 1e6
        until_us = now_us + horizon_s * 1e6
        rates = [rate_of(t) for t in tenants]
        caps = [rate.slots(read[3 * i + 2], now_us, until_us) for i, rate in enumerate(rates)]
        shares = share_out(min(room, fleet.slots(fleet_state, now_us, until_us)), caps, quantum)
        plans: list[tuple[int, Rate, int, dict[str, int]]] = []
        for i, tenant in enumerate(tenants):
            active = [a.decode() for a in read[3 * i]]
            credit = read[3 * i + 1]
            wanted = (
                turns(active, shares[i], quantum, credit.decode() if credit else "")
                if active and shares[i]
                else {}
            )
            plans.append((tenant, rates[i], shares[i], wanted))
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, _, _, wanted in plans:
                for audience, entries in wanted.items():
                    pipe.lrange(k.backlog(audience), 0, entries - 1)
            backlog_heads: list[list[bytes]] = await pipe.execute()
        fleet_interval, fleet_tolerance = fleet.gcra()
        script_keys = [
            k.queue,
            k.cleared,
            k.backlog_total,
            k.leases,
            k.tenants_due,
            k.fleet_limiter,
            k.dispatch_turn,
        ]
        audience_keys: list[str] = []
        job_keys: list[str] = []
        args: list[str | int | float | bytes] = [
            watermark,
            batch,
            quantum,
            int(horizon_s * 1000),
            fleet_interval,
            fleet_tolerance,
            APPLY_FUNCTION,
            ARQ_JOB_PREFIX,
            len(plans),
        ]
        read_heads = iter(backlog_heads)
        for tenant, rate, most, wanted in plans:
            tk = k.tenant(tenant)
            script_keys += [
                tk.active_list,
                tk.active_set,
                tk.dispatch_credit,
                tk.limiter,
                *aggregate_keys(k, tenant),
            ]
            interval, tolerance = rate.gcra()
            args += [tenant, interval, tolerance, most, len(wanted)]
            for audience in wanted:
                head = next(read_heads)
                audience_keys += [k.backlog(audience), k.stats(audience)]
                args += [audience, len(head), head[0] if head else ""]
                for raw in head:
                    version = decode_entry(raw.decode())[2]
                    job_keys.append(k.job(k.job_id(audience, version)))
        created, dropped, ready_before, total_after, short = await self._script(
            keys=[*script_keys, *audience_keys, *job_keys], args=args
        )
        return DispatchResult(
            int(created), int(dropped), int(ready_before), int(total_after), bool(short)
        )


async def reschedule(redis: Redis, keys: Keys, tenants: Sequence[int] | None) -> None:
    """After a rate change: make ``tenants`` (None: every tenant with work) due now, so the
    next dispatch serves them at the new rate instead of waiting for the slot the old one
    scheduled them at. Tenants without work stay without."""
    if tenants is None:
        tenants = [int(t) for t in await redis.zrange(keys.tenants_due, 0, -1)]
    if tenants:
        await redis.zadd(keys.tenants_due, dict.fromkeys((str(t) for t in tenants), 0), xx=True)


def share_out(room: int, caps: Sequence[int], turn: int) -> list[int]:
    """How many of ``room`` entries each tenant takes, round-robin in turns of ``turn``, none
    more than its ``caps`` (the slots it has): equal shares while the room binds."""
    shares = [0] * len(caps)
    open_ = [i for i, cap in enumerate(caps) if cap > 0]
    while room > 0 and open_:
        still = []
        for i in open_:
            take = min(turn, caps[i] - shares[i], room)
            shares[i] += take
            room -= take
            if shares[i] < caps[i]:
                still.append(i)
            if room == 0:
                break
        open_ = still
    return shares


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
