"""Talon.One Integration API bodies (audiences) and its error body, as msgspec Structs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

# Ids are Postgres bigints: bounding them here turns an oversized number into a 400, not a 500.
BIGINT_MAX = 2**63 - 1
Id = Annotated[int, Meta(ge=1, le=BIGINT_MAX)]
# The Integration API gives a name no upper bound; its Third-party API bounds the same audience
# name to 1000 characters, and so does the edge everywhere (a 500 KB name is a 400).
MAX_NAME_LENGTH = 1000
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
IntegrationId = Annotated[str, Meta(min_length=1, max_length=1000)]
ProfileIntegrationId = Annotated[str, Meta(min_length=1, max_length=1000)]
# The contract allows 1000 actions per request.
MAX_ACTIONS = 1000


class Body(msgspec.Struct, rename="camel", omit_defaults=True):
    """Base of the JSON bodies: camelCase on the wire, unset (None) fields left out."""


# --- requests -------------------------------------------------------------------------------


# Optional request fields may be absent but not null: the contract types them without null, so
# ``"lastUpdate": null`` is a 400 like any other wrong type (UNSET: absent).


class NewAudience(Body, kw_only=True):
    """POST /v2/audiences."""

    name: Name
    sandbox: bool | UnsetType = UNSET
    description: str | UnsetType = UNSET
    subscribed_applications_ids: list[Id] | UnsetType = UNSET
    integration: str | UnsetType = UNSET
    integration_id: IntegrationId | UnsetType = UNSET
    created_in_3rd_party: bool | UnsetType = msgspec.field(default=UNSET, name="createdIn3rdParty")
    last_update: datetime | UnsetType = UNSET


class UpdateAudience(Body, kw_only=True):
    """PUT /v2/audiences/{audienceId}."""

    name: Name
    subscribed_applications_ids: list[Id] | UnsetType = UNSET


class AudienceAction(Body, gc=False):
    """One entry of POST /v2/customer_audiences."""

    action: Literal["add", "delete"]
    profile_integration_id: ProfileIntegrationId
    audience_id: Id


class CustomerAudiences(Body):
    """POST /v2/customer_audiences; ``data`` is optional in the contract, so absent means none."""

    data: Annotated[list[AudienceAction], Meta(max_length=MAX_ACTIONS)] = []


# --- responses ------------------------------------------------------------------------------


class Audience(Body, kw_only=True):
    """The Audience entity the Integration API answers with."""

    account_id: int
    id: int
    created: datetime
    name: str
    sandbox: bool | None = None
    description: str | None = None
    subscribed_applications_ids: list[int] | None = None
    integration: str | None = None
    integration_id: str | None = None
    created_in_3rd_party: bool | None = msgspec.field(default=None, name="createdIn3rdParty")
    last_update: datetime | None = None


class AudienceWithCount(Audience, kw_only=True):
    """An audience in the read API: its current member count and stored attributes."""

    members_count: int
    # Kept as the JSON text Postgres returns, so it is never decoded and re-encoded.
    attributes: msgspec.Raw | None = None


# ``cursor``, with every page that has items: passed back, it reads the items after that page
# through an index (``skip`` reads past the skipped ones first). Absent on an empty page.


class AudiencePage(Body):
    total_result_size: int
    has_more: bool
    data: list[AudienceWithCount]
    cursor: str | None = None


class Member(Body):
    profile_integration_id: str
    updated: datetime


class MemberPage(Body):
    total_result_size: int
    has_more: bool
    data: list[Member]
    cursor: str | None = None


class AudienceRef(Body):
    id: int
    name: str


class ProfileAudiences(Body):
    data: list[AudienceRef]


# --- errors ---------------------------------------------------------------------------------


class ErrorSource(Body, kw_only=True):
    """Where a problem is: exactly one of ``pointer``, ``parameter`` or ``line`` (contract)."""

    pointer: str | None = None
    parameter: str | None = None
    line: str | None = None
    resource: str | None = None


class ErrorItem(Body, kw_only=True):
    title: str
    details: str | None = None
    source: ErrorSource


class ErrorBody(Body, kw_only=True):
    """The Integration API's error body: ``{message, errors, StatusCode}``."""

    message: str
    errors: list[ErrorItem]
    status_code: int = msgspec.field(name="StatusCode")


Attributes = dict[str, Any]
