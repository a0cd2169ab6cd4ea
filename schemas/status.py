"""The queue's state as metrics, ``/v1/status`` and ``cohortsync-admin status`` report it.

``queue_state.lua`` reads it from Redis in one step (``core/snapshot.py``, the one reader the
edge, the workers and the admin command share); the numbers are made from it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import msgspec

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
    # The active audiences (non-empty backlog) first, then the others asked for.
    audiences: list[AudienceCounts]

    def rate_per_minute(self, configured: int) -> int:
        """The rate limit in force, else ``configured``; 0 is none."""
        return self.rate_in_force if self.rate_in_force is not None else configured


def finish_times_s(pending: Mapping[int, int], rate_per_minute: float) -> dict[int, float]:
    """Seconds until each audience's pending changes are applied, when audiences with pending
    work share ``rate_per_minute`` round-robin as the dispatcher does: each gets an equal share,
    and what an audience that is done no longer needs goes to the others.

    The smallest backlog finishes first, after ``pending * n / rate``; each later one finishes
    after its remaining changes at the rate split among the audiences still going.
    """
    if rate_per_minute <= 0:
        raise ValueError("a rate is needed to estimate")
    rate_per_s = rate_per_minute / 60
    times = {audience: 0.0 for audience, n in pending.items() if n <= 0}
    going = sorted((n, audience) for audience, n in pending.items() if n > 0)
    elapsed_s, done = 0.0, 0
    for i, (n, audience) in enumerate(going):
        elapsed_s += (n - done) * (len(going) - i) / rate_per_s
        done = n
        times[audience] = elapsed_s
    return times


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
    # Accepted since the audience was created.
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


class Status(Base):
    queue_depth: QueueDepth
    audiences: list[AudienceStatus]
    rate: RateStatus
    workers_live: int
    # Changes in the dead-letter list, over all audiences.
    dead_letters: int
    # Until every audience's pending changes are applied.
    eta_seconds: float | None


def build_status(
    snapshot: QueueSnapshot, names: Mapping[int, str], configured_rate_per_minute: int
) -> Status:
    """``/v1/status`` from a snapshot: the audiences named in ``names`` (the live ones), those
    with pending work first, and estimates at the rate in force (the measured rate when there
    is no limit)."""
    rate = snapshot.rate_per_minute(configured_rate_per_minute)
    counts = [c for c in snapshot.audiences if c.audience_id in names]
    estimating_rate = rate if rate > 0 else snapshot.applied_last_minute
    pending = {c.audience_id: c.pending for c in counts}
    etas: dict[int, float] = {a: 0.0 for a, n in pending.items() if n <= 0}
    if estimating_rate > 0:
        etas = finish_times_s(pending, estimating_rate)
    overall: float | None = max(etas.values(), default=0.0)
    if len(etas) < len(pending):
        overall = None
    audiences = [
        AudienceStatus(
            id=c.audience_id,
            name=names[c.audience_id],
            pending=c.pending,
            applied=c.applied,
            total=c.accepted,
            dropped=c.dropped,
            dead_lettered=c.dead,
            eta_seconds=_rounded(etas.get(c.audience_id)),
        )
        for c in sorted(counts, key=lambda c: (c.pending == 0, c.audience_id))
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
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
