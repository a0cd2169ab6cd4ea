"""The queue snapshot's calls: one page of the busiest audiences (``pending_page.lua``), then the
snapshot of the queue and that page in one step (``queue_state.lua``). Neither grows with the
audiences: O(1) plus O(log n + page)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis

from schemas.keys import Keys
from schemas.lua import source
from schemas.status import AudienceCounts, QueueSnapshot, Totals

# The measured rate counts the changes applied during the last minute.
MEASURE_WINDOW_S = 60


class PendingPage(NamedTuple):
    """A page of the audiences with pending changes, busiest first."""

    # Rank of the first (0: the busiest).
    first_rank: int
    # (audience id, pending), in rank order.
    audiences: list[tuple[int, int]]
    # The pending of the audiences ranked before the page, as many as asked for.
    pending_before: tuple[int, ...]


class QueueState:
    """``queue_state.lua`` and ``pending_page.lua`` of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(source("queue_state"))
        self._page = redis.register_script(source("pending_page"))

    async def busiest(
        self,
        size: int,
        after: tuple[int, int] | None = None,
        ranks_before: int = 0,
        tenant: int | None = None,
    ) -> PendingPage:
        """Up to ``size`` audiences with work (``tenant``'s, or every tenant's), busiest first,
        after ``after`` (its pending and id, from the previous page's last), and the pending of
        up to ``ranks_before`` busier."""
        return await self._busiest(self.pending_set(tenant), size, after, ranks_before)

    async def busiest_tenants(self, size: int, after: tuple[int, int] | None = None) -> PendingPage:
        """Up to ``size`` tenants with work, busiest first, after ``after`` (as ``busiest``)."""
        return await self._busiest(self._keys.tenants_pending, size, after, 0)

    async def _busiest(
        self, ranked: str, size: int, after: tuple[int, int] | None, ranks_before: int
    ) -> PendingPage:
        pending, member = after if after is not None else ("", "")
        first, flat, before = await self._page(
            keys=[ranked], args=[pending, member, size, ranks_before]
        )
        page = [(int(a), int(float(p))) for a, p in zip(flat[::2], flat[1::2], strict=True)]
        return PendingPage(int(first), page, tuple(int(float(p)) for p in before))

    def pending_set(self, tenant: int | None) -> str:
        """The audiences with work, by pending: ``tenant``'s or every tenant's."""
        k = self._keys
        return k.audiences_pending if tenant is None else k.tenant(tenant).audiences_pending

    async def __call__(
        self,
        now_s: float,
        audience_ids: Iterable[int] = (),
        page: PendingPage | None = None,
        tenant: int | None = None,
    ) -> QueueSnapshot:
        """The queue at ``now_s`` (Unix time) with the counters of ``audience_ids``, as
        ``tenant`` sees it (its totals, rate, dead letters and applied counters), or the
        fleet's (None).

        The replicas are read first (one round trip), as the script may touch only keys
        declared to it; one that registers in between is in the next snapshot."""
        k = self._keys
        own = k.tenant(tenant) if tenant is not None else None
        now_ms = int(now_s * 1000)
        health_keys = await self._redis.zrangebyscore(k.workers, now_ms, "+inf")
        audiences = list(dict.fromkeys(audience_ids))
        # Whole seconds only: the current one is still being counted.
        second = int(now_s)
        counted = own or k
        counters = [counted.applied_second(s) for s in range(second - MEASURE_WINDOW_S, second)]
        script_keys = [
            k.backlog_total,
            k.queue,
            k.config,
            k.workers,
            k.leases,
            k.dead_letters,
            own.totals if own is not None else k.totals,
            k.tenant_rates,
            self.pending_set(tenant),
            *counters,
            *(h.decode() for h in health_keys),
        ]
        for audience_id in audiences:
            script_keys += [k.backlog(audience_id), k.stats(audience_id)]
        reply = await self._script(
            keys=script_keys,
            args=[
                now_ms,
                len(counters),
                len(health_keys),
                "" if tenant is None else tenant,
                1,
                *audiences,
            ],
        )
        snapshot = parse_snapshot(reply)
        if page is None:
            return snapshot
        return snapshot._replace(pending_before=page.pending_before, first_rank=page.first_rank)


def parse_snapshot(reply: Sequence[Any]) -> QueueSnapshot:
    backlog, ready, deferred, rate, live, running, applied, dead, rows, totals, with_work = reply
    accepted, done, dropped, failed, pending = (int(v) for v in totals)
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
        totals=Totals(accepted, done, dropped, failed, pending, int(with_work)),
    )
