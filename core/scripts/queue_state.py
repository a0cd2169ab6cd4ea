"""``queue_state.lua``'s call: read the registry and active list, then the snapshot in one step."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from schemas.keys import Keys
from schemas.lua import source
from schemas.status import AudienceCounts, QueueSnapshot

# The measured rate counts the changes applied during the last minute.
MEASURE_WINDOW_S = 60


class QueueState:
    """``queue_state.lua`` of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(source("queue_state"))

    async def __call__(self, now_s: float, audience_ids: Iterable[int] = ()) -> QueueSnapshot:
        """The queue at ``now_s`` (Unix time): the active audiences, then ``audience_ids``.

        The replicas and active audiences are read first (one round trip), as the script may
        touch only keys declared to it; one that registers or becomes active in between is
        in the next snapshot."""
        k = self._keys
        now_ms = int(now_s * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(k.workers, now_ms, "+inf")
            pipe.lrange(k.active_list, 0, -1)
            health_keys, active = await pipe.execute()
        audiences = list(dict.fromkeys([*(int(a) for a in active), *audience_ids]))
        # Whole seconds only: the current one is still being counted.
        second = int(now_s)
        counters = [k.applied_second(s) for s in range(second - MEASURE_WINDOW_S, second)]
        script_keys = [
            k.backlog_total,
            k.queue,
            k.config,
            k.workers,
            k.leases,
            k.dead_letters,
            *counters,
            *(h.decode() for h in health_keys),
        ]
        for audience_id in audiences:
            script_keys += [k.backlog(audience_id), k.stats(audience_id)]
        reply = await self._script(
            keys=script_keys, args=[now_ms, len(counters), len(health_keys), *audiences]
        )
        return parse_snapshot(reply)


def parse_snapshot(reply: Sequence[Any]) -> QueueSnapshot:
    backlog, ready, deferred, rate, live, running, applied, dead, rows = reply
    return QueueSnapshot(
        # The total is decremented by several scripts; never report a passing negative.
        backlog=max(0, int(backlog)),
        ready=int(ready),
        in_flight=int(running),
        deferred=int(deferred),
        rate_in_force=int(rate) if rate not in (b"", "") else None,
        workers_live=int(live),
        applied_last_minute=int(applied),
        dead_letters=int(dead),
        audiences=[AudienceCounts(*(int(v) for v in row)) for row in rows],
    )
