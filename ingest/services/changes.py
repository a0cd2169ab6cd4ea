"""Accepting membership changes into the per-audience Redis backlogs: the edge's hot path."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import NamedTuple

from core.scripts.backlogs import NotReplicated
from ingest import store
from ingest.errors import NotFound, ServiceUnavailable, TooManyRequests
from ingest.metrics import count_accepted
from ingest.state import DB, LIVE_AUDIENCES, MISS, SCRIPTS, SETTINGS, State, Tenant
from schemas import keys
from schemas.status import ETA_HEADER
from schemas.talon import ErrorItem, ErrorSource

# Amplitude and most clients back off on their own; never ask for more than an hour.
MAX_RETRY_AFTER_S = 3600


class AlreadyAccepted(Exception):
    """The message of ``accept_entries(..., once=...)`` was accepted before: nothing enqueued."""


class UnknownAudiences(NotFound):
    """Changes named audiences that do not exist or were deleted (or are another tenant's: the
    same answer); nothing was accepted."""

    def __init__(self, audience_ids: list[int]) -> None:
        self.audience_ids = audience_ids
        super().__init__("Audience not found")
        self.errors = [
            not_found_item(i, ErrorSource(resource=f"/v2/audiences/{i}")) for i in audience_ids
        ]


def not_found_item(audience_id: int, source: ErrorSource) -> ErrorItem:
    return ErrorItem(
        title="Audience not found",
        details=f"Audience {audience_id} does not exist or was deleted",
        source=source,
    )


async def missing_audiences(app: State, tenant: int, audience_ids: Iterable[int]) -> list[int]:
    """Those of ``audience_ids`` that are not live audiences of the tenant; one query for the
    uncached ones."""
    cache = app[LIVE_AUDIENCES]
    now = time.monotonic()
    unknown = [i for i in audience_ids if cache.get((tenant, i), now) is MISS]
    if not unknown:
        return []
    live = set(await store.live_audience_ids(app[DB], tenant, unknown))
    ttl_s = app[SETTINGS].audience_cache_ttl_s
    for audience_id in live:
        cache.put((tenant, audience_id), True, ttl_s, now)
    return [i for i in unknown if i not in live]


class Acceptance(NamedTuple):
    """Changes accepted, and at most how long until they are applied (None: no rate limit)."""

    number: int
    eta_seconds: float | None

    def headers(self) -> dict[str, str]:
        """``X-Cohortsync-Eta-Seconds`` on the Integration and CDP APIs' acceptances."""
        if self.eta_seconds is None:
            return {}
        return {ETA_HEADER: f"{self.eta_seconds:g}"}


async def accept_entries(
    app: State,
    tenant: Tenant,
    groups: dict[int, list[str]],
    *,
    once: str | None = None,
) -> Acceptance:
    """Append changes to the tenant's audiences' backlogs in one ``accept.lua`` call, all or
    nothing.

    ``groups`` maps audience id to entries of the form action code + profile id (``"a" + id``
    adds, ``"d" + id`` deletes; ``keys.ACTION_CODE``). Returns how many were accepted and at
    most how long until they are applied (the tenant's pending at its rate); raises
    ``UnknownAudiences`` (404) or ``TooManyRequests`` (429) having enqueued nothing.
    ``once`` (an Amplitude message id): accept only if that message was not accepted before,
    remembering it in the same step; raises ``AlreadyAccepted`` when it was.
    """
    if not groups and once is None:
        return Acceptance(0, 0.0)
    missing = await missing_audiences(app, tenant.id, groups)
    if missing:
        raise UnknownAudiences(missing)
    settings = app[SETTINGS]
    try:
        accepted = await app[SCRIPTS].backlogs.accept(
            groups, settings.max_backlog, once, tenant=tenant.id
        )
    except NotReplicated as e:
        # Queued on the primary, so they will be applied unless it fails over now. A retry
        # queues them again at newer versions: the same end state (memberships keep the
        # newest version), or, with an Amplitude message id, nothing more.
        count_accepted(app, e.accepted.number)
        raise ServiceUnavailable(
            "Not replicated",
            f"The changes were queued but no Redis replica confirmed them within "
            f"{e.timeout_ms} ms, so a failover could lose them. Retry the request.",
            pointer="/data",
            headers={"Retry-After": "1"},
        ) from e
    outcome, count = accepted.outcome, accepted.number
    if outcome == "seen":
        raise AlreadyAccepted()
    if outcome == "full":
        raise TooManyRequests(
            "Backlog full",
            f"{count} changes are queued; this request would pass the bound of "
            f"{settings.max_backlog}. Nothing was accepted.",
            retry_after_s=_retry_after_s(
                count + sum(map(len, groups.values())) - settings.max_backlog,
                settings.rate_limit_per_minute,
            ),
        )
    count_accepted(app, count)
    return Acceptance(count, accepted.eta_seconds(settings.rate_limit_per_minute))


async def accept_changes(
    app: State, tenant: Tenant, changes: Iterable[tuple[int, str, str]]
) -> Acceptance:
    """Accept ``(audience id, "add" | "delete", profile id)`` changes of the tenant's audiences;
    see ``accept_entries``."""
    groups: dict[int, list[str]] = {}
    code = keys.ACTION_CODE
    for audience_id, action, profile_id in changes:
        entries = groups.get(audience_id)
        if entries is None:
            entries = groups[audience_id] = []
        entries.append(code[action] + profile_id)
    return await accept_entries(app, tenant, groups)


def _retry_after_s(excess: int, rate_per_minute: int) -> int:
    # Roughly when the workers will have made room for this request at the configured rate.
    if rate_per_minute <= 0:
        return 1
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(excess * 60 / rate_per_minute)))
