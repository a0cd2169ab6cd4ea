"""Amplitude's default cohort webhook body, and what the edge answers it."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from schemas.talon import Body, IntegrationId, Name, ProfileIntegrationId

# Amplitude sends 1000 users per request by default and at most 10,000.
MAX_USERS = 10_000
MessageId = Annotated[str, Meta(min_length=1, max_length=1000)]


class CohortUser(msgspec.Struct, gc=False):
    user_id: ProfileIntegrationId
    # Kept as the JSON text that arrived: it goes to Postgres as jsonb without being rebuilt.
    # Absent and null both mean "no properties"; anything but an object is refused.
    user_properties: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


class CohortSync(msgspec.Struct):
    """POST /amplitude/cohorts: one batch of users who entered (``in_cohort``) or left a cohort.

    Unknown fields are tolerated: Amplitude may add some, and they change nothing here.
    """

    cohort_name: Name
    cohort_id: IntegrationId
    in_cohort: bool
    # Unique per batch; a retried batch carries the same one.
    message_id: MessageId
    users: Annotated[list[CohortUser], Meta(max_length=MAX_USERS)]
    # Epoch seconds as a string in Amplitude's bodies; informative only.
    computed_time: str | int | None = None


class CohortSyncResult(Body, kw_only=True):
    """The 200 answer (Amplitude reads only the status)."""

    # None only for a repeated batch whose audience was deleted since.
    audience_id: int | None
    # Changes enqueued by this request: 0 for a repeated ``message_id``.
    accepted: int
    duplicate: bool
    # At most how long until this batch's changes are applied: the tenant's pending changes,
    # these included, at its rate. None without a rate limit, or for a repeated batch.
    eta_seconds: float | None = None
