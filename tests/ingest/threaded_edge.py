"""The edge on a real port, served from its own thread and event loop, for synchronous callers
(schemathesis and hypothesis drive their requests with blocking clients)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web

from ingest.app import create_app
from ingest.bodies import MAX_REQUEST_LINE_BYTES
from schemas.settings import Settings

T = TypeVar("T")
START_TIMEOUT_S = 30


@contextmanager
def threaded_edge(settings: Settings) -> Iterator[str]:
    """The edge's base URL while it runs on a free port of 127.0.0.1."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="edge", daemon=True)
    thread.start()

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(START_TIMEOUT_S)

    runner = web.AppRunner(
        create_app(settings), access_log=None, max_line_size=MAX_REQUEST_LINE_BYTES
    )
    try:
        run(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        run(site.start())
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        run(runner.cleanup())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(START_TIMEOUT_S)
        loop.close()
