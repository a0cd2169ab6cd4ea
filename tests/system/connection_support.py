"""Raw sockets against an edge process: requests that never finish arriving, idle connections,
and the edge's open file descriptors read from /proc."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any

from schemas.settings import Settings
from tests.support.process import free_port, json_lines, service_env, spawn, stop, wait_ready

# Every request of these tests sends this header block; bodies and keys vary.
HOST = b"Host: 127.0.0.1\r\n"


@dataclass
class EdgeProcess:
    url: str
    port: int
    pid: int
    log: IO[bytes]
    ops_port: int | None = None

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def client_sockets(self) -> int:
        """The edge's descriptors that are connections accepted on its ports (not its
        listeners, nor its own connections to Redis and Postgres, whose pools grow)."""
        ports = {self.port} | ({self.ops_port} if self.ops_port else set())
        accepted = _accepted_inodes(ports)
        fds = os.listdir(f"/proc/{self.pid}/fd")
        count = 0
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("socket:[") and target[8:-1] in accepted:
                count += 1
        return count

    def requests_logged(self) -> list[dict[str, Any]]:
        return [line for line in json_lines(self.log) if line.get("event") == "request"]

    def problems_logged(self) -> list[dict[str, Any]]:
        """Warnings and errors the edge logged (a traceback is one too: not a JSON line)."""
        return [line for line in json_lines(self.log) if line["level"] in ("WARNING", "ERROR")]


@asynccontextmanager
async def edge_process(settings: Settings, **env: str) -> AsyncIterator[EdgeProcess]:
    """``python -m ingest.main`` on a free port with ``env`` added, until the block ends (then
    it must stop cleanly on SIGTERM)."""
    port = free_port()
    env = service_env(settings, COHORTSYNC_HTTP_PORT=str(port), **env)
    with tempfile.TemporaryFile() as log:
        proc = await spawn("ingest.main", env, log)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url, proc)
            ops = env.get("COHORTSYNC_OPS_PORT")
            yield EdgeProcess(url, port, proc.pid, log, int(ops) if ops else None)
        finally:
            assert await stop(proc) == 0


# /proc/net/tcp's state column for a listening socket.
_LISTEN = "0A"


def _accepted_inodes(ports: set[int]) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port in ports and fields[3] != _LISTEN:
                    inodes.add(fields[9])
    return inodes


class Raw:
    """One TCP connection to the edge, written and read byte by byte."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened_at: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        # Just before connecting: the edge cannot have started its clock earlier.
        self.opened_at = opened_at
        self._dribbling: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int) -> Raw:
        opened_at = asyncio.get_running_loop().time()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, opened_at)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def start_dribble(self, data: bytes, every_s: float) -> None:
        """Send ``data`` one byte at a time, ``every_s`` apart, until sent, the edge closes or
        this connection is closed."""
        self._dribbling = asyncio.create_task(self._dribble(data, every_s))

    async def _dribble(self, data: bytes, every_s: float) -> None:
        try:
            for i in range(len(data)):
                await self.send(data[i : i + 1])
                await asyncio.sleep(every_s)
        except ConnectionError:
            pass

    async def until_closed(self, timeout_s: float) -> tuple[bytes, float]:
        """Everything the edge sends until it closes the connection, and how long after this
        connection was opened it closed."""
        received = b""
        async with asyncio.timeout(timeout_s):
            try:
                while chunk := await self.reader.read(65536):
                    received += chunk
            except ConnectionError:
                pass
        return received, asyncio.get_running_loop().time() - self.opened_at

    async def response(self, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-cased names), body (by Content-Length)."""
        async with asyncio.timeout(timeout_s):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        if self._dribbling is not None:
            self._dribbling.cancel()
        self.writer.close()


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 request (Content-Length set when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), HOST.rstrip()]
    lines += [h.encode() for h in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def wait_for_connections(
    edge: EdgeProcess, at_most: int | None = None, at_least: int = 0, timeout_s: float = 5.0
) -> int:
    """The connections the edge holds on its port once they are between ``at_least`` and
    ``at_most`` (fails naming the count after ``timeout_s``)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                n = edge.client_sockets()
                if at_least <= n and (at_most is None or n <= at_most):
                    return n
                await asyncio.sleep(0.05)
    except TimeoutError:
        held = edge.client_sockets()
        wanted = f"{at_least}-{'' if at_most is None else at_most}"
        raise AssertionError(f"the edge holds {held} connections, not {wanted}") from None


def fd_soft_limit(pid: int) -> int:
    """The process's soft limit on open files, from /proc."""
    with open(f"/proc/{pid}/limits") as limits:
        return next(int(line.split()[3]) for line in limits if "open files" in line)
