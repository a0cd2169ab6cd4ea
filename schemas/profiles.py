"""Read API bodies about one customer profile."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schemas.talon import Body


class ProfileAttributes(Body, kw_only=True):
    """GET /v1/customer_profiles/{integrationId}/attributes."""

    integration_id: str
    # A JSON object, kept as the text Postgres returns.
    attributes: msgspec.Raw
    # When the profile's own attributes last changed; None when it has none of its own.
    updated: datetime | None = None
