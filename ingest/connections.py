"""Bounds on the edge's connections: a request arrives whole in time, and a listener holds at most
so many connections at once.

aiohttp bounds idle keep-alive connections (``keepalive_timeout``) but not a request that is
still arriving: a header that never ends, a chunked body never finished, or a body shorter than
its Content-Length held a connection and its file descriptor for good. ``Guard`` sits between
the socket and aiohttp's protocol and gives each request ``request_read_timeout_s`` to arrive
whole, counted from the connection's opening for its first request and from the first byte for
each later one. A request is whole when its body reaches EOF (a middleware tells the guard which
body that is); a clock that runs out closes the connection.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from ingest.errors import ApiError, Handler, ServiceUnavailable, render, route_of

log = logging.getLogger(__name__)

# A client refused for capacity may retry this soon: connections turn over in seconds.
RETRY_AFTER_S = 1
# Answered even past the capacity (and then closed): a liveness probe failing under a flood
# of connections would get the process restarted, which only makes the flood worse.
PROBES = frozenset({"/healthz", "/readyz"})


class RequestTimeout(ApiError, TimeoutError):
    # A TimeoutError too: aiohttp, when it drains a body no handler read, takes a
    # TimeoutError as the end of the wait rather than as a crash to log.
    status = 408
    message = "Request timeout"


class Connections:
    """The connections of one listener: how many are open, the limits, and the guard of each."""

    def __init__(self, *, max_connections: int, read_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self.open = 0
        self.read_timeouts = 0
        self.refused = 0
        self._guards: dict[asyncio.BaseProtocol, Guard] = {}

    def protocol(self, make_handler: web.Server) -> Guard:
        """A protocol for one accepted connection: aiohttp's, behind a guard."""
        return Guard(make_handler(), self)

    def guard_of(self, request: web.BaseRequest) -> Guard | None:
        # None when the request came in over a listener without guards (aiohttp's test server).
        return self._guards.get(request.protocol)

    def _opened(self, guard: Guard, inner: asyncio.BaseProtocol) -> bool:
        self.open += 1
        self._guards[inner] = guard
        return self.open > self.max_connections

    def _closed(self, inner: asyncio.BaseProtocol) -> None:
        self.open -= 1
        self._guards.pop(inner, None)


class Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a clock for the request arriving."""

    def __init__(self, inner: RequestHandler, connections: Connections) -> None:
        self._inner = inner
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._clock: asyncio.TimerHandle | None = None
        # The body of the request being read, once its headers are in.
        self._body: StreamReader | None = None
        self._timed_out: RequestTimeout | None = None
        self.over_capacity = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.over_capacity = self._connections._opened(self, self._inner)
        # A new connection is for a request: a client that sends nothing is not kept waiting
        # on until aiohttp's keep-alive timeout (past the capacity, that would hold the fds
        # the capacity is there to save).
        self._start_clock()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._clock is None and self._transport is not None:
            # The first byte of a later request on this connection.
            self._start_clock()
        self._inner.data_received(data)

    def eof_received(self) -> None:
        # aiohttp ignores a half-close; None lets asyncio close the transport as usual.
        self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clock()
        self._transport = None
        self._connections._closed(self._inner)
        # aiohttp fails the request being read with what it is given here (else a
        # ConnectionResetError, which would be logged as a backing service failing: a 503).
        self._inner.connection_lost(self._timed_out or exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def request_started(self, request: web.BaseRequest) -> None:
        """Its headers are in: the request is whole once its body reaches EOF (at once for
        a request without a body)."""
        self._body = request.content
        request.content.on_eof(self._stop_clock)

    def _start_clock(self) -> None:
        loop = asyncio.get_running_loop()
        self._clock = loop.call_later(self._connections.read_timeout_s, self._expired)

    def _stop_clock(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        self._body = None

    def _expired(self) -> None:
        self._clock = None
        self._connections.read_timeouts += 1
        body, self._body = self._body, None
        self._timed_out = RequestTimeout(
            "Request not received in time",
            f"The request did not arrive whole within {self._connections.read_timeout_s:g} s",
        )
        if body is not None:
            # A handler waiting for the body ends with a 408 in its log line.
            body.set_exception(self._timed_out)
        log.debug(
            "closing a connection: request not received within %g s (%s)",
            self._connections.read_timeout_s,
            "body" if body is not None else "headers",
            extra={"event": "read_timeout"},
        )
        if self._transport is not None:
            self._transport.close()


CONNECTIONS = web.AppKey("connections", Connections)


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard that a request's headers are in; answer a connection beyond
    the listener's capacity 503 at once (no key lookup, no body read) and close it."""
    guard = request.app[CONNECTIONS].guard_of(request)
    if guard is None:
        return await handler(request)
    guard.request_started(request)
    if not guard.over_capacity:
        return await handler(request)
    if route_of(request) in PROBES:
        answer = await handler(request)
        answer.force_close()
        return answer
    connections = request.app[CONNECTIONS]
    connections.refused += 1
    response = render(
        request,
        ServiceUnavailable(
            "Too many connections",
            f"This edge holds {connections.max_connections} connections already; retry later.",
            resource=request.path,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ),
    )
    response.force_close()
    return response
