"""A real headless Chromium, driven over the DevTools protocol (a websocket), for page tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

# Debian's package and the usual names elsewhere; COHORTSYNC_TEST_CHROMIUM names another.
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, and quiet on a machine without a network: no background connections at all.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 30.0


class BrowserError(Exception):
    pass


def find_chromium() -> str | None:
    given = os.environ.get("COHORTSYNC_TEST_CHROMIUM")
    if given:
        return given
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One tab: send DevTools commands, read the events it reported."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append((data["method"], data.get("params", {})))
        for future in self._waiting.values():
            future.set_exception(BrowserError("the browser closed the connection"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        await self._ws.send_json({"id": number, "method": method, "params": params})
        reply = await asyncio.wait_for(future, START_TIMEOUT_S)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression[:60]}…: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def screenshot(self, path: Path) -> None:
        """Save a PNG of the whole page, however tall."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        width = await self.evaluate("document.documentElement.clientWidth")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png")
        _save(path, base64.b64decode(shot["data"]))

    def problems(self) -> list[str]:
        """Uncaught exceptions and Content-Security-Policy refusals the page reported."""
        found = []
        for method, params in self.events:
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Log.entryAdded" and "Content Security Policy" in params["entry"].get(
                "text", ""
            ):
                found.append(params["entry"]["text"])
        return found

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@asynccontextmanager
async def chromium(executable: str, width: int = 1360, height: int = 900) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own empty profile) with one tab open on about:blank."""
    with tempfile.TemporaryDirectory(
        prefix="cohortsync-chromium-", ignore_cleanup_errors=True
    ) as tmp:
        profile = Path(tmp) / "profile"
        log = (Path(tmp) / "chromium.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            async with aiohttp.ClientSession() as http:
                page_ws = await _page_socket(proc, profile, http, Path(tmp) / "chromium.log")
                ws = await http.ws_connect(page_ws, max_msg_size=0)
                page = Page(ws)
                try:
                    await page.send("Page.enable")
                    await page.send("Runtime.enable")
                    await page.send("Log.enable")
                    await page.send(
                        "Emulation.setDeviceMetricsOverride",
                        width=width,
                        height=height,
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    yield page
                finally:
                    await page.close()
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()


async def _page_socket(
    proc: asyncio.subprocess.Process, profile: Path, http: aiohttp.ClientSession, log: Path
) -> str:
    """The websocket URL of the first tab, once Chromium says which port it listens on."""
    port_file = profile / "DevToolsActivePort"
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            if proc.returncode is not None:
                raise BrowserError(f"chromium exited with {proc.returncode}: {_text(log)}")
            port = _text(port_file).split()
            if port:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port[0]}/json/list") as response:
                        targets = await response.json()
                    pages = [t for t in targets if t.get("type") == "page"]
                    if pages:
                        url: str = pages[0]["webSocketDebuggerUrl"]
                        return url
            await asyncio.sleep(0.1)


def _text(path: Path) -> str:
    """A small file's text, or "" while it does not exist."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
