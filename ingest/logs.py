"""One log line per request, with a request id the client can quote (``X-Request-Id``).

Only the method, the route's template, the status, the duration and the id are logged: never a
header, a query string or a path (paths carry profile ids), so never a key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from ingest.errors import Handler, route_of
from ingest.metrics import CLIENT_CLOSED, count_request

log = logging.getLogger("cohortsync.http")

HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# A client's own id is kept when it is a plain token; anything else gets a fresh one, so a
# header cannot forge log lines or carry arbitrary text into them.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Probes and scrapes arrive every few seconds from every kubelet and Prometheus: DEBUG only.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class _Unparsable(logging.Filter):
    """aiohttp logs a request it cannot parse (a request line past its bound, broken HTTP) at
    ERROR with a traceback whose message quotes the request line, path and all. Keep one
    WARNING naming the error's type: the client's mistake, not ours, and no path in the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BadHttpMessage):
            record.msg, record.args = "unparsable HTTP request refused: %s", (type(error).__name__,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_Unparsable())


def request_id(request: web.Request) -> str:
    """The request's id: the client's ``X-Request-Id`` when usable, else a new one."""
    given = request.headers.get(HEADER, "")
    return given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: give the request its id, then log and count how it ended."""
    request[REQUEST_ID] = request_id(request)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        route = route_of(request)
        duration_s = loop.time() - started
        count_request(request, route, status, duration_s)
        level = logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO
        if log.isEnabledFor(level):
            duration_ms = round(duration_s * 1000, 2)
            log.log(
                level,
                "%s %s %d %.1f ms",
                request.method,
                route,
                status,
                duration_ms,
                extra={
                    "event": "request",
                    "request_id": request[REQUEST_ID],
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "duration_ms": duration_ms,
                },
            )


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer, errors included, carries the request's id."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[HEADER] = rid
