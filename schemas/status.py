"""The queue's state as metrics, ``/v1/status`` and ``cohortsync-admin status`` report it.

``queue_state.lua`` reads it from Redis in one step (``core/snapshot.py``, the one reader the
edge, the workers and the admin command share); the numbers are made from it here. Its cost does
not grow with the audiences: totals are aggregates the scripts keep, and per-audience detail is
read for one page of audiences (busiest first) at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import msgspec

from schemas import cursors

# What the Integration and CDP APIs' acceptances answer beside their contract's (empty) body:
# at most how long until the changes are applied, at the tenant's rate.
ETA_HEADER = "X-Cohortsync-Eta-Seconds"

DEAD_LETTERS_HELP = (
    "Changes that failed permanently, kept for cohortsync-admin dead-letters list/replay."
)


class AudienceCounts(NamedTuple):
    """One audience's counters (``Keys.stats``) and backlog length."""

    audience_id: int
    backlog: int
    accepted: int
    applied: int
    dropped: int
    # Dead-lettered (failed permanently; cohortsync-admin dead-letters replay re-queues them).
    dead: int = 0

    @property
    def pending(self) -> int:
        """Changes accepted and not yet applied, dropped or dead-lettered: those in the backlog
        plus those handed to arq. Every counter is written in the step that finishes what it
        counts (accept.lua, dispatch.lua, finish.lua), once, so this is exact after any crash."""
        return max(self.backlog, self.accepted - self.applied - self.dropped - self.dead)


class Totals(NamedTuple):
    """Every audience's counters summed (``Keys.totals``), kept by the scripts that change them:
    exact, and read in O(1)."""

    accepted: int = 0
    applied: int = 0
    dropped: int = 0
    dead: int = 0
    # The sum of the audiences' ``AudienceCounts.pending``.
    pending: int = 0
    audiences_with_work: int = 0


class QueueSnapshot(NamedTuple):
    """The queue at one moment (``queue_state.lua``)."""

    backlog: int
    ready: int
    in_flight: int
    deferred: int
    # ``cohortsync-admin set-rate`` in force, else the rate the workers were started with (as
    # they publish it); None when no worker ever ran (the reader's settings apply).
    rate_in_force: int | None
    workers_live: int
    applied_last_minute: int
    # Changes in the dead-letter list.
    dead_letters: int
    # The audiences asked for (one page), in the order asked.
    audiences: list[AudienceCounts]
    totals: Totals = Totals()
    # The pending of audiences ranked before the page (busiest first), as many as were read
    # (at most ETA_EXACT_RANKS): what the finish-time model needs beside the page itself.
    pending_before: tuple[int, ...] = ()
    # The page's rank among the audiences with work (0: the busiest first).
    first_rank: int = 0

    def rate_per_minute(self, configured: int) -> int:
        """The rate limit in force, else ``configured``; 0 is none."""
        return self.rate_in_force if self.rate_in_force is not None else configured


# The finish-time model reads the pending of at most this many busier audiences: exact for the
# pages among the busiest ETA_EXACT_RANKS audiences (the first pages, which the dashboard and
# /metrics show), an upper bound past them (``finish_time_s``).
ETA_EXACT_RANKS = 1000


def finish_time_s(
    pending: int, total_pending: int, others: Iterable[int], rate_per_minute: float
) -> float:
    """Seconds until an audience's ``pending`` changes are applied, when the audiences with work
    share ``rate_per_minute`` equally (deficit round-robin), what a finished one no longer needs
    going to the others (water-filling): with R the rate and p_i each audience's pending, it
    finishes after sum_i min(p_i, pending) / R = (total - sum over p_i > pending of
    (p_i - pending)) / R.

    ``others`` are the pending of other audiences, at least those with more than ``pending``;
    when some with more are left out, the answer is an upper bound, too long by at most
    (their excess over ``pending``) / R."""
    if rate_per_minute <= 0:
        raise ValueError("a rate is needed to estimate")
    if pending <= 0:
        return 0.0
    beyond = sum(p - pending for p in others if p > pending)
    return (total_pending - beyond) * 60 / rate_per_minute


class Base(msgspec.Struct, rename="camel", kw_only=True):
    """The JSON of ``GET /v1/status``: camelCase, like the rest of the read API."""


class QueueDepth(Base):
    backlog: int
    ready: int
    in_flight: int
    deferred: int


class AudienceStatus(Base):
    id: int
    name: str
    # Accepted and not yet applied or dropped.
    pending: int
    applied: int
    # Accepted since the audience was last idle for IDLE_RECLAIM_S (its counters are then
    # reclaimed; the totals keep them).
    total: int
    # Superseded by a newer change or a clear, so never applied.
    dropped: int
    # Failed permanently and kept in the dead letters (cohortsync-admin dead-letters).
    dead_lettered: int
    # None when no rate is known (no limit and nothing applied in the last minute).
    eta_seconds: float | None


class RateStatus(Base):
    # 0: no limit.
    configured_per_minute: int
    # Changes applied during the last minute, over all replicas.
    measured_per_minute: int


class TotalsStatus(Base):
    """Over every audience, exact whatever the page."""

    # Accepted since the deployment started counting (the totals keep what idle or deleted
    # audiences counted).
    accepted: int
    applied: int
    dropped: int
    dead_lettered: int
    pending: int
    audiences_with_work: int


class TenantLoad(NamedTuple):
    """A tenant with work as the queue holds it: its totals, and the rate the workers
    dispatch it at (None: none published, the reader's settings apply)."""

    tenant: int
    totals: Totals
    rate: int | None

    def rate_per_minute(self, configured: int) -> int:
        return self.rate if self.rate is not None else configured


def demand_per_second(
    tenants: Iterable[TenantLoad], configured_rate: int, fleet_rate: int = 0
) -> float:
    """Changes per second the tenants with work may be applied at: the sum of their rates (one
    without a limit asks for its pending within a minute), at most the fleet-wide limit. Backlog
    depth says nothing of the workers needed under rate limits; this does."""
    demand = 0.0
    for load in tenants:
        rate = load.rate_per_minute(configured_rate)
        demand += (rate if rate > 0 else load.totals.pending) / 60
    return min(demand, fleet_rate / 60) if fleet_rate > 0 else demand


class TenantStatus(Base):
    """One tenant on the fleet's status (the ``ops`` key's view)."""

    id: int
    hostname: str
    pending: int
    applied: int
    total: int
    dropped: int
    dead_lettered: int
    audiences_with_work: int
    # The rate its changes are dispatched at (0: no limit).
    rate_per_minute: int
    # At that rate; None when it has no limit.
    eta_seconds: float | None


def tenant_status(
    tenant: int, hostname: str, t: Totals, rate: int | None, configured: int
) -> TenantStatus:
    """A tenant's line on the fleet's status, from its totals and its rate in force (else
    ``configured``)."""
    per_minute = rate if rate is not None else configured
    eta = None if per_minute <= 0 else (t.pending * 60 / per_minute if t.pending > 0 else 0.0)
    return TenantStatus(
        id=tenant,
        hostname=hostname,
        pending=t.pending,
        applied=t.applied,
        total=t.accepted,
        dropped=t.dropped,
        dead_lettered=t.dead,
        audiences_with_work=t.audiences_with_work,
        rate_per_minute=per_minute,
        eta_seconds=_rounded(eta),
    )


class Status(Base):
    # The shared workers' queue (every tenant's changes); ``totals`` is the caller's tenant's.
    queue_depth: QueueDepth
    # One page: the audiences with pending changes, busiest first, then the others by id.
    audiences: list[AudienceStatus]
    rate: RateStatus
    workers_live: int
    # Changes in the dead-letter list, over all audiences.
    dead_letters: int
    # Until every audience's pending changes are applied.
    eta_seconds: float | None
    totals: TotalsStatus
    # Pass as ``cursor`` for the next page; None on the last.
    next_cursor: str | None = None
    # The fleet's view only (an ``ops`` key): tenants with work, busiest first.
    tenants: list[TenantStatus] | None = None


# ``GET /v1/status?pageSize=``: audiences per page.
DEFAULT_STATUS_PAGE_SIZE = 50
MAX_STATUS_PAGE_SIZE = 1000


class StatusCursor(NamedTuple):
    """Where a status page starts: after the audience ``audience_id`` with ``pending`` changes
    among those with work, or (``pending`` None) after ``audience_id`` among the idle ones."""

    pending: int | None
    audience_id: int


def encode_cursor(cursor: StatusCursor) -> str:
    """Opaque to clients (``schemas/cursors.py``)."""
    if cursor.pending is None:
        return cursors.encode(cursors.IdleAfter(cursor.audience_id))
    return cursors.encode(cursors.BusyAfter(cursor.pending, cursor.audience_id))


def decode_cursor(text: str) -> StatusCursor:
    """The cursor ``encode_cursor`` made; ValueError (``BadCursor``) for anything else."""
    match cursors.decode(text):
        case cursors.BusyAfter(pending, audience_id):
            return StatusCursor(pending, audience_id)
        case cursors.IdleAfter(audience_id):
            return StatusCursor(None, audience_id)
        case _:
            raise cursors.BadCursor("not a status cursor")


def build_status(
    snapshot: QueueSnapshot,
    names: Mapping[int, str],
    configured_rate_per_minute: int,
    next_cursor: StatusCursor | None = None,
    tenants: list[TenantStatus] | None = None,
) -> Status:
    """``/v1/status`` from a snapshot of one page: the audiences named in ``names`` (the live
    ones), in the snapshot's order, and estimates at the rate in force (the measured rate when
    there is no limit)."""
    rate = snapshot.rate_per_minute(configured_rate_per_minute)
    estimating_rate = rate if rate > 0 else snapshot.applied_last_minute
    t = snapshot.totals
    counts = [c for c in snapshot.audiences if c.audience_id in names]
    page_pending = [c.pending for c in counts]
    others = [*snapshot.pending_before, *page_pending]

    def eta(pending: int) -> float | None:
        if pending <= 0:
            return 0.0
        if estimating_rate <= 0:
            return None
        return finish_time_s(pending, max(t.pending, pending), others, estimating_rate)

    overall = eta(t.pending)
    audiences = [
        AudienceStatus(
            id=c.audience_id,
            name=names[c.audience_id],
            pending=c.pending,
            applied=c.applied,
            total=c.accepted,
            dropped=c.dropped,
            dead_lettered=c.dead,
            eta_seconds=_rounded(eta(c.pending)),
        )
        for c in counts
    ]
    return Status(
        queue_depth=QueueDepth(
            backlog=snapshot.backlog,
            ready=snapshot.ready,
            in_flight=snapshot.in_flight,
            deferred=snapshot.deferred,
        ),
        audiences=audiences,
        rate=RateStatus(
            configured_per_minute=rate, measured_per_minute=snapshot.applied_last_minute
        ),
        workers_live=snapshot.workers_live,
        dead_letters=snapshot.dead_letters,
        eta_seconds=_rounded(overall),
        totals=TotalsStatus(
            accepted=t.accepted,
            applied=t.applied,
            dropped=t.dropped,
            dead_lettered=t.dead,
            pending=t.pending,
            audiences_with_work=t.audiences_with_work,
        ),
        next_cursor=encode_cursor(next_cursor) if next_cursor is not None else None,
        tenants=tenants,
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
