"""Talon.One Third-party API bodies for customer data platforms (``/cdp/...``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

import msgspec
from msgspec import Meta

from schemas.talon import Body, Id, IntegrationId, ProfileIntegrationId

# The contract's limit on adds + deletes summed over the whole request.
MAX_CHANGES = 1000
AudienceName = Annotated[str, Meta(min_length=1, max_length=1000)]

# An audience as the request names it: Talon.One's numeric id (v1) or the CDP's own id (v2).
AudienceRef = TypeVar("AudienceRef", Id, IntegrationId)


class CdpAudienceRequest(Body):
    """POST /cdp/audiences and PUT /cdp/audiences/{audienceId}."""

    audience_id: IntegrationId
    audience_name: AudienceName


class CdpAudience(Body, kw_only=True):
    """CreateAndUpdateResponse: entity, accountEntity and newAudience."""

    id: int
    created: datetime
    account_id: int
    name: str
    integration: str | None = None
    integration_id: str | None = None


class ProfileChanges(Body, Generic[AudienceRef], gc=False):
    """One profile's audiences to join and to leave."""

    customer_profile_id: ProfileIntegrationId
    adds: list[AudienceRef] = msgspec.field(default_factory=list)
    deletes: list[AudienceRef] = msgspec.field(default_factory=list)


class ProfilesAudiences(Body, Generic[AudienceRef]):
    """PUT /cdp/customer_profiles/audiences (``ProfilesAudiences[Id]``) and
    PUT /cdp/v2/customer_profiles/audiences (``ProfilesAudiences[IntegrationId]``)."""

    data: list[ProfileChanges[AudienceRef]] = msgspec.field(default_factory=list)


class CdpErrorBody(msgspec.Struct, kw_only=True):
    """The Third-party API's error body: ``{StatusCode, Error, RequestUUID}``."""

    status_code: int = msgspec.field(name="StatusCode")
    error: str = msgspec.field(name="Error")
    request_uuid: str = msgspec.field(name="RequestUUID")
