"""The edge's request log lines in-process: by route, never by path."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ingest.bodies import MAX_REQUEST_LINE_BYTES
from ingest.state import DB
from tests.support.edge import Client
from tests.support.status import wait_until


async def test_a_failing_request_is_logged_by_route_never_by_path(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert client.app is not None
    await client.app[DB].close()  # every query now fails: a 500, logged with its traceback
    with caplog.at_level(logging.INFO):
        response = await client.get("/v1/customer_profiles/secret-profile-42/audiences")
    assert response.status == 500
    # The test server keeps aiohttp's access log, which cohortsync-edge turns off.
    ours = [logging.Formatter().format(r) for r in caplog.records if r.name != "aiohttp.access"]
    assert any("GET /v1/customer_profiles/{integrationId}/audiences" in line for line in ours)
    assert any("InterfaceError: pool is closed" in line for line in ours)
    assert not [line for line in ours if "secret-profile-42" in line]


async def test_an_unparsable_request_is_logged_without_its_path(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    # Past MAX_REQUEST_LINE_BYTES: aiohttp refuses it before any route, and logs it.
    path = "/v1/customer_profiles/secret-profile-42" + "x" * MAX_REQUEST_LINE_BYTES
    reader, writer = await asyncio.open_connection(client.host, client.port)
    with caplog.at_level(logging.INFO):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()

        async def logged() -> bool:
            return any(r.name == "aiohttp.server" for r in caplog.records)

        await wait_until(logged, "aiohttp's log line")
    assert status_line.split()[1] == b"400"
    lines = [logging.Formatter().format(r) for r in caplog.records]
    assert "unparsable HTTP request refused: LineTooLong" in lines
    assert not [line for line in lines if "secret-profile-42" in line]
