"""API key format: random, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "cs_"
# How much of a key is kept in the clear so an operator can tell keys apart.
SHOWN_CHARS = 8


def new_key() -> str:
    """A fresh key with 256 bits of randomness."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> bytes:
    # Keys are long random strings, so a fast hash is enough: no guessing attack is feasible.
    return hashlib.sha256(key.encode()).digest()


def shown_part(key: str) -> str:
    return key[:SHOWN_CHARS]


# What a key may call (api_keys.scope; NULL is "all"): every API surface, or the surfaces that
# name its scope. A scope no surface names, e.g. one written into the database by hand, allows
# nothing. Every key belongs to one tenant (api_keys.tenant_id) and sees only its data, but an
# ``ops`` key: it belongs to none, reads the status of every tenant, and every tenant's surface
# refuses it (403).
ALL = "all"
OPS = "ops"
SCOPES = (ALL, "cdp", "integration", "read", OPS)
