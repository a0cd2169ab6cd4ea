"""``Authorization: ApiKey-v1 <key>`` on every API surface, checked against hashed keys, the
scopes each surface takes, and the tenant a key belongs to."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from ingest import store
from ingest.errors import ApiError, Handler, Unauthorized
from ingest.state import API_KEY, API_KEYS, DB, MISS, SETTINGS, ApiKey, State, Tenant
from schemas.apikeys import ALL, OPS, hash_key

SCHEME = "apikey-v1"
# Unknown keys are remembered briefly: enough to shed a retry storm, short enough that a key
# created a moment ago works almost at once.
NEGATIVE_TTL_S = 1.0


class Forbidden(ApiError):
    status = 403
    message = "Forbidden"


def _refuse(details: str) -> Unauthorized:
    # Never echo the key: the details name what is wrong, not what was sent.
    return Unauthorized("Invalid API key", details, parameter="Authorization")


async def authenticate(state: State, header: str | None) -> ApiKey:
    """The live key an ``Authorization`` header carries, else ``Unauthorized``."""
    if not header:
        raise _refuse("Authorization header missing; expected 'ApiKey-v1 <key>'")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != SCHEME or not key:
        raise _refuse("Authorization header must be 'ApiKey-v1 <key>'")
    key_hash = hash_key(key)
    cache = state[API_KEYS]
    now = time.monotonic()
    found = cache.get(key_hash, now)
    if found is MISS:
        row = await store.find_api_key(state[DB], key_hash)
        found = None
        if row is not None:
            tenant = None
            if row["tenant_id"] is not None:
                tenant = Tenant(row["tenant_id"], row["hostname"], row["account_id"])
            found = ApiKey(row["id"], row["scope"], tenant)
        ttl_s = state[SETTINGS].auth_cache_ttl_s if found is not None else NEGATIVE_TTL_S
        cache.put(key_hash, found, ttl_s, now)
    if found is None:
        raise unknown_key()
    return found


def unknown_key() -> Unauthorized:
    """401 for a key that is unknown or revoked, or whose tenant was removed meanwhile."""
    return _refuse("Unknown or revoked API key")


def check_scope(key: ApiKey, scopes: frozenset[str]) -> None:
    """Refuse (403) a key whose scope is not one of ``scopes``."""
    scope = key.scope or ALL
    if scope not in scopes:
        taken = " or ".join(f"'{s}'" for s in sorted(scopes))
        raise Forbidden(
            "API key not allowed here",
            f"A key with scope '{scope}' may call only other endpoints: this one takes {taken}",
            parameter="Authorization",
        )


def tenant_of(request: web.Request) -> Tenant:
    """The tenant of the request's key: every query of a tenant's data is scoped by it. An
    ``ops`` key, which belongs to none, is refused (403)."""
    tenant = request[API_KEY].tenant
    if tenant is None:
        raise Forbidden(
            "API key not allowed here",
            f"A key with scope '{OPS}' belongs to no tenant: it may read only /v1/status",
            parameter="Authorization",
        )
    return tenant


def key_required(*scopes: str) -> Middleware:
    """A surface's middleware: refuse a request without a live key, or with a key whose scope
    is neither ``all`` nor one of ``scopes``, before any of the surface's handlers runs (an
    unknown path under it included); the key the request used is ``request[API_KEY]``."""
    taken = frozenset((ALL, *scopes))

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = await authenticate(request.config_dict, request.headers.get("Authorization"))
        check_scope(key, taken)
        request[API_KEY] = key
        return await handler(request)

    return require_key
