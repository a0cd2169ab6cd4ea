"""What the worker keeps of its leases (``core/scripts/leases.py``): when it renews them, and
how each job's run ended until the job is finished in Redis."""

from __future__ import annotations

from typing import NamedTuple

from core.scripts.leases import LEASE_S, Outcome
from schemas.keys import DEFAULT_TENANT

# Four renewals per lease, so a replica keeps its jobs through a Redis hiccup or event-loop
# stall of seconds.
RENEW_EVERY_S = LEASE_S / 4


class Finished(NamedTuple):
    """How a job's run ended, kept until the worker finishes the job in Redis."""

    audience_id: int
    outcome: Outcome
    # The dead letter (JSON) when the outcome is dead.
    letter: bytes = b""
    # The audience's tenant, whose counters count the outcome.
    tenant: int = DEFAULT_TENANT
