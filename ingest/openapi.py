"""``GET /openapi.json``: the edge's own OpenAPI 3.1 document, built from the msgspec schemas.

Talon.One's reference specifications stay the contract. This document says what this edge
answers, including what they do not list: each such response carries ``x-not-in-reference``,
and an operation lists under ``x-reference-only`` the statuses the reference names that this
edge never answers there. ``tests/ingest/test_openapi.py`` checks both against the reference files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec

from schemas.amplitude import MAX_USERS, CohortSync, CohortSyncResult
from schemas.cdp import (
    MAX_CHANGES,
    CdpAudience,
    CdpAudienceRequest,
    CdpErrorBody,
    ProfilesAudiences,
)
from schemas.profiles import ProfileAttributes
from schemas.settings import Settings
from schemas.status import (
    DEFAULT_STATUS_PAGE_SIZE,
    ETA_EXACT_RANKS,
    ETA_HEADER,
    MAX_STATUS_PAGE_SIZE,
    Status,
)
from schemas.talon import (
    MAX_ACTIONS,
    MAX_NAME_LENGTH,
    Attributes,
    Audience,
    AudiencePage,
    CustomerAudiences,
    ErrorBody,
    Id,
    IntegrationId,
    MemberPage,
    NewAudience,
    ProfileAudiences,
    UpdateAudience,
)

PATH = "/openapi.json"
SECURITY_SCHEME = "api_key_v1"
# Marks a response status Talon.One's reference does not list for the operation.
NOT_IN_REFERENCE = "x-not-in-reference"
# The statuses the reference lists for an operation that this edge never answers there.
REFERENCE_ONLY = "x-reference-only"
_REF = "#/components/schemas/{name}"


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: Any  # a type msgspec describes, or an inline JSON Schema
    description: str
    required: bool = True


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    status: int
    # A type msgspec describes, or (media type, inline schema) for bodies that are not JSON
    # Structs; None when the answer has no body.
    response: Any = None
    request: Any = None
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    # The statuses Talon.One's reference lists here; None where the path is ours alone.
    reference: tuple[int, ...] | None = None
    description: str = ""
    authenticated: bool = True
    # Served by the operations port instead when COHORTSYNC_OPS_PORT is set.
    ops_only: bool = False


_ERRORS = {
    400: "Invalid request (malformed JSON, a wrong type, a bound passed, a bad path or query "
    "parameter, a missing header); nothing was accepted.",
    401: "No API key, an unknown or revoked one, or not `Authorization: ApiKey-v1 <key>`.",
    403: "The key's scope does not cover this path (an `ops` key: any path but `/v1/status`).",
    404: "An audience named does not exist or was deleted; nothing was accepted.",
    409: "An audience with this integration and integrationId already exists.",
    413: "The body is larger than `COHORTSYNC_MAX_BODY_BYTES` ({max_body_bytes:,} bytes).",
    415: "`Content-Type` is not `application/json`.",
    429: "The backlog is full (`COHORTSYNC_MAX_BACKLOG`): nothing was accepted; retry after "
    "`Retry-After` seconds.",
    503: "Redis or Postgres did not answer: nothing was accepted; retry after `Retry-After` "
    "seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}

_ETA = {
    ETA_HEADER: {
        "description": "At most how many seconds until the accepted changes are applied.",
        "schema": {"type": "number", "minimum": 0},
    }
}

_AUDIENCE_ID = Param("audienceId", "path", Id, "Talon.One's id of the audience.")
_CDP_AUDIENCE_ID = Param(
    "audienceId", "path", IntegrationId, "The CDP's own id of the audience (its integrationId)."
)
_PROFILE_ID = Param("integrationId", "path", IntegrationId, "The customer profile's id.")
_CDP_HEADERS = (
    Param(
        "destination-hostname",
        "header",
        {"type": "string", "format": "hostname"},
        "The Talon.One deployment: the hostname of the key's tenant, else 401 (the default "
        "tenant's keys: any hostname `COHORTSYNC_ALLOWED_DESTINATION_HOSTNAMES` allows but "
        "another tenant's); a URL of it is taken too (its host). Without it: 400 `No "
        "Deployment URL specified`.",
    ),
    Param(
        "customer-data-platform-name",
        "header",
        IntegrationId,
        "The CDP's name; lowercased, the `integration` of the audiences it creates.",
    ),
)
_STATUS_PAGING = (
    Param(
        "pageSize",
        "query",
        int,
        f"Audiences per page, 1 to {MAX_STATUS_PAGE_SIZE} (default {DEFAULT_STATUS_PAGE_SIZE}).",
        required=False,
    ),
    Param(
        "cursor",
        "query",
        str,
        "The `nextCursor` of the previous page (opaque); without it, the first page.",
        required=False,
    ),
)
_PAGING = (
    Param("pageSize", "query", int, "Items per page, 1 to 1000 (default 50).", required=False),
    Param(
        "skip",
        "query",
        int,
        "Items to skip (default 0). Slower the further it goes (the skipped items are read "
        "first): to read on, pass the previous page's `cursor` instead.",
        required=False,
    ),
    Param(
        "cursor",
        "query",
        str,
        "The `cursor` of the previous page, as it was: the items after it, through an index "
        "whatever the position. Not together with `skip`; another value is a 400.",
        required=False,
    ),
)

_BODY = (400, 401, 403, 413, 415, 503)
_NO_BODY = (400, 401, 403, 503)
_ACCEPTS = (
    "Answered once every change is in Redis; all or nothing. The 204 carries "
    f"`{ETA_HEADER}`: at most how long until the changes are applied (the tenant's pending "
    "changes, these included, at its rate; absent without a rate limit)."
)
_CDP_ITEM = (
    f"At most {MAX_CHANGES} adds + deletes over the whole request. An item whose `adds` and "
    "`deletes` name the same audience is refused with 400 (the reference gives no order "
    "between them, so the request has no single meaning). `customerProfileId` is required "
    "and 1 to 1000 characters (the reference leaves both open)."
)
_INTEGRATION_AUDIENCE = (
    f"`name` is 1 to {MAX_NAME_LENGTH} characters (the Third-party API's bound; the "
    "Integration API gives none). Optional fields may be absent but not `null`. "
    "`subscribedApplicationsIds` holds distinct ids from 1 to 2^63-1 (entity ids; the "
    "reference says only `integer`, so 0 or a negative id is a 400 here)."
)

OPERATIONS: tuple[Operation, ...] = (
    # --- Talon.One Integration API ------------------------------------------------------------
    Operation("post", "/v2/audiences", "createAudienceV2", "Create audience", "Integration API",
              201, Audience, NewAudience, (*_BODY, 409), reference=(201, 400, 401, 409),
              description=_INTEGRATION_AUDIENCE),
    Operation("put", "/v2/audiences/{audienceId}", "updateAudienceV2", "Rename audience",
              "Integration API", 200, Audience, UpdateAudience, (*_BODY, 404), (_AUDIENCE_ID,),
              reference=(200, 401, 404), description=_INTEGRATION_AUDIENCE),
    Operation("delete", "/v2/audiences/{audienceId}", "deleteAudienceV2",
              "Delete audience and its memberships", "Integration API", 204,
              errors=(*_NO_BODY, 404), params=(_AUDIENCE_ID,), reference=(204, 400, 401, 404)),
    Operation("delete", "/v2/audiences/{audienceId}/memberships", "deleteAudienceMembershipsV2",
              "Remove every member, keep the audience", "Integration API", 204,
              errors=(*_NO_BODY, 404), params=(_AUDIENCE_ID,), reference=(204, 401, 404)),
    Operation("post", "/v2/customer_audiences", "updateCustomerProfileAudiences",
              "Add profiles to audiences and remove them", "Integration API", 204,
              request=CustomerAudiences, errors=(*_BODY, 404, 429),
              reference=(204, 400, 401, 404),
              description=f"At most {MAX_ACTIONS} actions. {_ACCEPTS}"),
    Operation("put", "/v2/audience_customers/{audienceId}/attributes",
              "updateAudienceCustomersAttributes", "Set attributes on all members",
              "Integration API", 204, request=Attributes, errors=(*_BODY, 404),
              params=(_AUDIENCE_ID,), reference=(204, 401, 404),
              description="Stored on the audience and applied lazily: readers see them with "
              "the audience's members."),
    Operation("get", "/v2/authping", "authPing", "Check an API key", "Integration API", 204,
              errors=(401, 403, 503),
              description="204 for a valid key: lets a CDP show \"Connected\"."),
    # --- Talon.One Third-party API for CDPs ---------------------------------------------------
    Operation("post", "/cdp/audiences", "cdp/createAudience", "Create audience (CDP)",
              "Third-party API (CDP)", 201, CdpAudience, CdpAudienceRequest, (*_BODY, 409),
              _CDP_HEADERS, reference=(201, 400, 401, 404, 409, 429)),
    Operation("put", "/cdp/audiences/{audienceId}", "cdp/updateAudience",
              "Rename audience (CDP)", "Third-party API (CDP)", 200, CdpAudience,
              CdpAudienceRequest, (*_BODY, 404), (_CDP_AUDIENCE_ID, *_CDP_HEADERS),
              reference=(200, 400, 401, 404, 429),
              description="`audienceId` in the body must equal the path's (else 400)."),
    Operation("delete", "/cdp/audiences/{audienceId}", "cdp/deleteAudience",
              "Delete audience (CDP)", "Third-party API (CDP)", 204, errors=(*_NO_BODY, 404),
              params=(_CDP_AUDIENCE_ID, *_CDP_HEADERS), reference=(204, 400, 401, 404, 429)),
    Operation("put", "/cdp/customer_profiles/audiences", "cdp/updateCustomerProfilesAudiences",
              "Profiles join and leave audiences, by Talon.One ids (CDP)",
              "Third-party API (CDP)", 204, request=ProfilesAudiences[Id],
              errors=(*_BODY, 404, 429), params=_CDP_HEADERS,
              reference=(204, 400, 401, 404, 429), description=f"{_CDP_ITEM} {_ACCEPTS}"),
    Operation("put", "/cdp/v2/customer_profiles/audiences",
              "cdp/v2/updateCustomerProfilesAudiences",
              "Profiles join and leave audiences, by the CDP's ids (CDP)",
              "Third-party API (CDP)", 204, request=ProfilesAudiences[IntegrationId],
              errors=(*_BODY, 404, 429), params=_CDP_HEADERS,
              reference=(204, 400, 401, 404, 429), description=f"{_CDP_ITEM} {_ACCEPTS}"),
    # --- Amplitude ----------------------------------------------------------------------------
    Operation("post", "/amplitude/cohorts", "amplitudeCohortSync", "Amplitude cohort webhook",
              "Amplitude", 200, CohortSyncResult, CohortSync, (*_BODY, 429),
              description=f"At most {MAX_USERS:,} users. The first batch of a cohort creates "
              "its audience, a new `cohort_name` renames it. A repeated `message_id` is answered "
              f"200 with `duplicate: true` and enqueues nothing. {_ACCEPTS}"),
    # --- read API -----------------------------------------------------------------------------
    Operation("get", "/v1/audiences", "listAudiences", "Audiences with member counts",
              "Read API", 200, AudiencePage, errors=_NO_BODY, params=_PAGING),
    Operation("get", "/v1/audiences/{audienceId}/memberships", "listMemberships",
              "An audience's current members", "Read API", 200, MemberPage,
              errors=(*_NO_BODY, 404), params=(_AUDIENCE_ID, *_PAGING)),
    Operation("get", "/v1/customer_profiles/{integrationId}/audiences", "profileAudiences",
              "The audiences a profile is a member of", "Read API", 200, ProfileAudiences,
              errors=_NO_BODY, params=(_PROFILE_ID,)),
    Operation("get", "/v1/customer_profiles/{integrationId}/attributes", "profileAttributes",
              "A profile's attributes", "Read API", 200, ProfileAttributes, errors=_NO_BODY,
              params=(_PROFILE_ID,)),
    Operation("get", "/v1/status", "status", "Queue depth, progress, ETA, rate, workers",
              "Read API", 200, Status, errors=(400, 401, 403, 503), params=_STATUS_PAGING,
              description="One page of live audiences: those with pending changes first, the "
              "busiest first, then the others by id; `nextCursor` is the next page's `cursor` "
              "(null on the last). `totals`, `queueDepth` and `etaSeconds` cover every audience "
              "whatever the page. ETAs model the audiences with work sharing the rate equally; "
              f"past the {ETA_EXACT_RANKS:,} busiest, an audience's ETA is an upper bound. A page "
              "may hold fewer than `pageSize` (an audience deleted with changes still running "
              "is left out); an audience whose pending changes while pages are read may show "
              "twice or be missed."),
    # --- operations and documentation, without a key ------------------------------------------
    Operation("get", "/healthz", "healthz", "Process alive", "Operations", 200,
              ("application/json", {"type": "object", "properties": {"status": {"const": "ok"}}}),
              authenticated=False),
    Operation("get", "/readyz", "readyz", "Redis and Postgres reachable, migrations applied",
              "Operations", 200,
              ("application/json", {
                  "type": "object",
                  "properties": {
                      "status": {"enum": ["ready", "unavailable"]},
                      "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                  },
              }),
              authenticated=False,
              description="503 with the same body, naming what is not ok."),
    Operation("get", "/metrics", "metrics", "Prometheus metrics", "Operations", 200,
              ("text/plain", {"type": "string"}), authenticated=False, ops_only=True),
    Operation("get", "/dashboard", "dashboard", "A page for people", "Operations", 200,
              ("text/html", {"type": "string"}), authenticated=False, ops_only=True,
              description="Self-contained; asks for a key (scope `all` or `read`)."),
    Operation("get", PATH, "openapi", "This document", "Documentation", 200,
              ("application/json", {"type": "object"}), authenticated=False),
    Operation("get", "/docs", "docs", "This document as a page", "Documentation", 200,
              ("text/html", {"type": "string"}), authenticated=False,
              description="Rendered on the server: no scripts, nothing fetched from elsewhere."),
)  # fmt: skip

# What the edge checks in code beyond what msgspec's schemas say.
_CONSTRAINTS: dict[tuple[str, str], dict[str, Any]] = {
    ("NewAudience", "subscribedApplicationsIds"): {"uniqueItems": True},
    ("UpdateAudience", "subscribedApplicationsIds"): {"uniqueItems": True},
}
_GENERIC = re.compile(r"^(\w+)_typing\.Annotated_(int|str)_")
_GENERIC_SUFFIX = {"int": "ByTalonId", "str": "ByCdpId"}


def _schemas(types: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """JSON Schemas (2020-12, as OpenAPI 3.1 takes them) for ``types`` and their components,
    generic Structs renamed from msgspec's ``ProfilesAudiences_typing.Annotated_int_…``."""
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    renames = {}
    for name in components:
        match = _GENERIC.match(name)
        if match:
            renames[name] = match.group(1) + _GENERIC_SUFFIX[match.group(2)]
    text = msgspec.json.encode([refs, components]).decode()
    for old, new in renames.items():
        text = text.replace(f'"{old}"', f'"{new}"').replace(
            _REF.format(name=old), _REF.format(name=new)
        )
    refs, components = msgspec.json.decode(text)
    for new in renames.values():
        components[new]["title"] = new
    for (component, prop), extra in _CONSTRAINTS.items():
        components[component]["properties"][prop].update(extra)
    return refs, components


def _content(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(
    op: Operation, schema_of: dict[Any, dict[str, Any]], max_body_bytes: int
) -> dict[str, Any]:
    cdp = op.path.startswith("/cdp/")
    error_schema = schema_of[CdpErrorBody if cdp else ErrorBody]
    responses: dict[str, Any] = {}
    ok: dict[str, Any] = {"description": "Success"}
    if isinstance(op.response, tuple):
        ok["content"] = _content(*op.response)
    elif op.response is not None:
        ok["content"] = _content("application/json", schema_of[op.response])
    if _ACCEPTS in op.description:
        ok["headers"] = _ETA
    responses[str(op.status)] = ok
    for status in sorted(op.errors):
        text = _ERRORS[status].format(max_body_bytes=max_body_bytes)
        answer: dict[str, Any] = {
            "description": text,
            "content": _content("application/json", error_schema),
        }
        if status in (429, 503):
            answer["headers"] = _RETRY_AFTER
        if op.reference is not None and status not in op.reference:
            answer["description"] = text + " (Not listed by Talon.One's reference.)"
            answer[NOT_IN_REFERENCE] = True
        responses[str(status)] = answer
    built: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": responses,
        "security": [{SECURITY_SCHEME: []}] if op.authenticated else [],
    }
    if op.description:
        built["description"] = op.description
    if op.reference is not None:
        answered = {op.status, *op.errors}
        missing = [s for s in op.reference if s not in answered]
        if missing:
            built[REFERENCE_ONLY] = missing
    if op.params:
        built["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": p.schema if isinstance(p.schema, dict) else schema_of[p.schema],
            }
            for p in op.params
        ]
    if op.request is not None:
        built["requestBody"] = {
            "required": True,
            "content": _content("application/json", schema_of[op.request]),
        }
    return built


def build(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the public listener: every operation in ``OPERATIONS`` but
    those the operations port serves when it is set."""
    served = [op for op in OPERATIONS if not (op.ops_only and settings.ops_port)]
    max_body_bytes = settings.max_body_bytes
    types: list[Any] = [ErrorBody, CdpErrorBody]
    for op in served:
        candidates = [op.request, op.response, *(p.schema for p in op.params)]
        types += [t for t in candidates if t is not None and not isinstance(t, tuple | dict)]
    unique = list(dict.fromkeys(types))
    refs, components = _schemas(unique)
    schema_of = dict(zip(unique, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in served:
        paths.setdefault(op.path, {})[op.method] = _operation(op, schema_of, max_body_bytes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cohortsync edge",
            "version": "1",
            "description": (
                "Receives Amplitude cohort syncs for Talon.One. Talon.One's Integration API and "
                "Third-party API references are the contract for `/v2/` and `/cdp/`; this "
                "document is what this edge answers, including statuses they do not list "
                f"(`{NOT_IN_REFERENCE}`). Errors take the Integration API's shape "
                "`{message, errors, StatusCode}`, under `/cdp/` the Third-party API's "
                "`{StatusCode, Error, RequestUUID}`. Everywhere: an unknown path is a 404 and a "
                "method a path does not take a 405 (with `Allow`), in that shape; query parameters "
                "an operation does not name are ignored; "
                "`X-Request-Id` is echoed (or made)."
                + (
                    " `/metrics` and `/dashboard` are on the operations port "
                    "(`COHORTSYNC_OPS_PORT`), not on this listener."
                    if settings.ops_port
                    else ""
                )
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`ApiKey-v1 <key>`, from `cohortsync-admin create-key`.",
                }
            },
        },
    }


@cache
def encoded(settings: Settings) -> bytes:
    return msgspec.json.encode(build(settings))
