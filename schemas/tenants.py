"""Tenants: one Talon.One deployment each, named by its hostname (the CDP API's
``destination-hostname``); the ``tenants`` table of migration 0006."""

from __future__ import annotations

import re

# The default tenant (id ``schemas.keys.DEFAULT_TENANT``) holds what existed before tenants and
# what a single-deployment user creates. It is named by no real hostname, so its keys may send
# any destination-hostname the edge serves that is not another tenant's.
DEFAULT_HOSTNAME = "default"

# RFC 1123 labels (the CDP reference's ``format: hostname``), after ``hostname()`` lowercased it.
_HOSTNAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
MAX_HOSTNAME_LENGTH = 253


def hostname(value: str) -> str:
    """The deployment a ``destination-hostname`` (or a tenant's name) names, lowercased.

    The header should be a bare hostname; a pasted URL (with its scheme) still names the same
    deployment. Without a scheme the whole value must be the hostname ("a/b" is not "a").
    """
    value = value.strip().lower()
    _, found, rest = value.partition("://")
    if found:
        value = rest.split("/", 1)[0].split(":", 1)[0]
    return value.rstrip(".")


def is_hostname(value: str) -> bool:
    """Whether ``value`` (as ``hostname()`` returns it) is a valid hostname."""
    return len(value) <= MAX_HOSTNAME_LENGTH and _HOSTNAME.fullmatch(value) is not None
