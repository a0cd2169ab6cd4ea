"""A minimal HTTP/1.1 keep-alive client: the bench's sender must cost the edge as little CPU as
possible (on two cores they share), so requests are prebuilt bytes and only the status is read."""

from __future__ import annotations

import asyncio


class HttpError(RuntimeError):
    """The edge answered something other than what the bench expected."""


def request(method: str, path: str, port: int, body: bytes = b"", *, api_key: str = "") -> bytes:
    """A complete request, ready to be written as it is, as often as needed."""
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if api_key:
        head.append(f"Authorization: ApiKey-v1 {api_key}")
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive connection; ``send`` returns the status once the whole answer is read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self._writer.write(raw)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self._reader.readexactly(length) if length else b""
        return status, body

    async def expect(self, raw: bytes, status: int) -> None:
        got, body = await self.send(raw)
        if got != status:
            raise HttpError(f"expected {status}, got {got}: {body[:500]!r}")

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
