"""The edge's errors and the middleware that turns every failure into the contract's error body."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from core.errors import TRANSIENT
from schemas.talon import ErrorBody, ErrorItem, ErrorSource

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """A failure the client should hear about, with the status and the problems to report."""

    status = 500
    message = "Internal server error"

    def __init__(
        self,
        title: str,
        details: str | None = None,
        *,
        pointer: str | None = None,
        parameter: str | None = None,
        resource: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(title)
        if message is not None:
            self.message = message
        source = ErrorSource(pointer=pointer, parameter=parameter, resource=resource)
        self.errors = [ErrorItem(title=title, details=details, source=source)]
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400
    message = "Bad request"


class Unauthorized(ApiError):
    status = 401
    message = "Unauthorized"


class NotFound(ApiError):
    status = 404
    message = "Not found"


class Conflict(ApiError):
    status = 409
    message = "Conflict"


class UnsupportedMediaType(ApiError):
    status = 415
    message = "Unsupported media type"


class ServiceUnavailable(ApiError):
    status = 503
    message = "Service unavailable"


class TooManyRequests(ApiError):
    status = 429
    message = "Too many requests"

    def __init__(self, title: str, details: str, *, retry_after_s: int) -> None:
        # The request's changes as a whole are what did not fit.
        super().__init__(
            title, details, pointer="/data", headers={"Retry-After": str(retry_after_s)}
        )


# A renderer writes an ApiError in one surface's error format.
ErrorRenderer = Callable[[web.Request, ApiError], web.Response]
# Set on each surface's application where it is built; the error middleware answers in the
# renderer of the innermost application the request was routed to.
ERROR_RENDERER: web.AppKey[ErrorRenderer] = web.AppKey("error_renderer")


def render_talon(request: web.Request, error: ApiError) -> web.Response:
    """An error in the Integration API's shape, ``{message, errors, StatusCode}``."""
    body = ErrorBody(message=error.message, errors=error.errors, status_code=error.status)
    return web.Response(
        body=_encoder.encode(body),
        status=error.status,
        headers=error.headers,
        content_type="application/json",
    )


def render(request: web.Request, error: ApiError) -> web.Response:
    """``error`` in the shape of the surface that routed the request (an unknown path under a
    surface's prefix included); the Integration API's shape outside every surface."""
    for app in reversed(request.match_info.apps):
        renderer = app.get(ERROR_RENDERER)
        if renderer is not None:
            return renderer(request, error)
    return render_talon(request, error)


# msgspec ends a validation message with " - at `$.data[3].audienceId`".
_PATH = re.compile(r" - at `\$([^`]*)`$")
_MISSING = re.compile(r"Object missing required field `([^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def json_pointer(path: str) -> str:
    """msgspec's path after ``$`` (``.data[3].audienceId``) as a JSON pointer."""
    parts = []
    for name, index in _PATH_PART.findall(path):
        if index == "...":
            # A dict key msgspec does not name: point at the dict.
            break
        parts.append(_escape(name or index))
    return "".join("/" + p for p in parts)


def _escape(token: str) -> str:
    # RFC 6901: "~" and "/" inside a reference token.
    return token.replace("~", "~0").replace("/", "~1")


def invalid_body(error: msgspec.ValidationError) -> BadRequest:
    text = str(error)
    match = _PATH.search(text)
    pointer = json_pointer(match.group(1)) if match else ""
    details = text[: match.start()] if match else text
    missing = _MISSING.match(details)
    if missing:
        pointer += "/" + _escape(missing.group(1))
    return BadRequest("Invalid request body", details, pointer=pointer)


def malformed_body(error: msgspec.DecodeError) -> BadRequest:
    return BadRequest("Malformed JSON", str(error), pointer="")


def from_http(request: web.Request, error: web.HTTPException) -> ApiError:
    """aiohttp's own refusals (unknown route, wrong method, body too large) in our shape."""
    translated = ApiError(error.reason, error.text, resource=request.path, message=error.reason)
    translated.status = error.status
    # Allow (405) and similar headers still matter; the body and its length are ours now.
    translated.headers = {
        k: v
        for k, v in error.headers.items()
        if k.lower() not in {"content-type", "content-length"}
    }
    return translated


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Requests whose path matched no route share one name in logs and metric labels: the raw path
# would let any client create series without bound, and paths carry profile ids.
UNMATCHED = "unmatched"


def route_of(request: web.Request) -> str:
    """The route's path template (``/v1/audiences/{audienceId}/memberships``), never the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map our errors, msgspec's and aiohttp's to the contract's body; anything else is a 500."""
    try:
        return await handler(request)
    except ApiError as e:
        return render(request, e)
    except msgspec.ValidationError as e:
        return render(request, invalid_body(e))
    except msgspec.DecodeError as e:
        return render(request, malformed_body(e))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return render(request, from_http(request, e))
    except TRANSIENT as e:
        # Redis or Postgres is down or unreachable: worth a retry, unlike a 500.
        log.warning("%s %s: backing service unavailable: %r", request.method, route_of(request), e)
        unavailable = ServiceUnavailable(
            "Service unavailable",
            "A backing service did not answer; nothing was accepted. Retry later.",
            resource=request.path,
            headers={"Retry-After": "1"},
        )
        return render(request, unavailable)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, route_of(request))
        return render(request, ApiError("Internal server error", resource=request.path))
