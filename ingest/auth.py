"""``Authorization: ApiKey-v1 <key>`` on every API surface, checked against hashed keys."""

from __future__ import annotations

import time

from aiohttp import web

from ingest import store
from ingest.errors import ApiError, Handler, Unauthorized
from ingest.state import API_KEY, API_KEYS, DB, MISS, SETTINGS, ApiKey
from schemas.apikeys import hash_key

routes = web.RouteTableDef()

SCHEME = "apikey-v1"
PROTECTED_PREFIXES = ("/v2/", "/v1/", "/cdp/", "/amplitude/")
# What a key may call, by its scope (api_keys.scope; NULL is "all"). A scope not listed here,
# e.g. one written into the database by hand, allows nothing.
SCOPES: dict[str, tuple[str, ...]] = {
    "all": PROTECTED_PREFIXES,
    # A CDP destination such as Amplitude's: the CDP endpoints, the cohort webhook, and the
    # ping that shows "Connected".
    "cdp": ("/cdp/", "/amplitude/", "/v2/authping"),
    # The Talon.One Integration API.
    "integration": ("/v2/",),
    # The read API: the rule engine, dashboards.
    "read": ("/v1/",),
}
# Unknown keys are remembered briefly: enough to shed a retry storm, short enough that a key
# created a moment ago works almost at once.
NEGATIVE_TTL_S = 1.0


class Forbidden(ApiError):
    status = 403
    message = "Forbidden"


def _refuse(details: str) -> Unauthorized:
    # Never echo the key: the details name what is wrong, not what was sent.
    return Unauthorized("Invalid API key", details, parameter="Authorization")


async def authenticate(app: web.Application, header: str | None) -> ApiKey:
    """The live key an ``Authorization`` header carries, else ``Unauthorized``."""
    if not header:
        raise _refuse("Authorization header missing; expected 'ApiKey-v1 <key>'")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != SCHEME or not key:
        raise _refuse("Authorization header must be 'ApiKey-v1 <key>'")
    key_hash = hash_key(key)
    cache = app[API_KEYS]
    now = time.monotonic()
    found = cache.get(key_hash, now)
    if found is MISS:
        row = await store.find_api_key(app[DB], key_hash)
        found = ApiKey(row["id"], row["scope"]) if row is not None else None
        ttl_s = app[SETTINGS].auth_cache_ttl_s if found is not None else NEGATIVE_TTL_S
        cache.put(key_hash, found, ttl_s, now)
    if found is None:
        raise _refuse("Unknown or revoked API key")
    return found


def check_scope(key: ApiKey, path: str) -> None:
    """Refuse (403) a key whose scope does not cover ``path``."""
    scope = key.scope or "all"
    allowed = SCOPES.get(scope, ())
    if not path.startswith(allowed):
        raise Forbidden(
            "API key not allowed here",
            f"A key with scope '{scope}' may call only {', '.join(allowed) or 'nothing'}",
            parameter="Authorization",
        )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse unauthenticated requests to the API surfaces, and keys whose scope does not
    cover the path, before any handler runs; the key the request used is ``request[API_KEY]``."""
    if request.path.startswith(PROTECTED_PREFIXES):
        key = await authenticate(request.app, request.headers.get("Authorization"))
        check_scope(key, request.path)
        request[API_KEY] = key
    return await handler(request)


@routes.get("/v2/authping")
async def authping(request: web.Request) -> web.Response:
    """Lets a CDP show "Connected": the middleware already checked the key."""
    return web.Response(status=204)
