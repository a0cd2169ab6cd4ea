"""Bounded requests on a real edge process and real sockets: a request that never finishes
arriving is closed after COHORTSYNC_REQUEST_READ_TIMEOUT_S, idle keep-alive connections after
COHORTSYNC_KEEPALIVE_TIMEOUT_S, connections past COHORTSYNC_MAX_CONNECTIONS get a 503; and the
edge's file descriptors come back each time."""

from __future__ import annotations

import asyncio
import json
import resource
import sys

import pytest

from ingest.app import DB_POOL_MAX
from schemas.settings import Settings
from tests.support.process import ROOT, free_port, service_env
from tests.system.connection_support import (
    EdgeProcess,
    Raw,
    edge_process,
    fd_soft_limit,
    request,
    wait_for_connections,
)

DEFAULT_READ_TIMEOUT_S = Settings().request_read_timeout_s
# How late a close may come: the edge's timer, the event loop and this machine's load.
LATE_S = 3.0


def unfinished_requests(key: str) -> dict[str, tuple[bytes, bytes]]:
    """Each kind of request that never arrives whole: (what is sent at once, what is then
    dribbled a byte at a time, which never completes it)."""
    auth = f"Authorization: ApiKey-v1 {key}\r\nContent-Type: application/json\r\n".encode()
    post = b"POST /v2/customer_audiences HTTP/1.1\r\n" + b"Host: 127.0.0.1\r\n" + auth
    return {
        # A connection opened and nothing sent.
        "nothing": (b"", b""),
        # Header lines that keep coming: a slowloris.
        "headers": (b"GET /v1/audiences HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"X-Slow: " + b"a" * 200),
        # A chunked body whose chunks keep coming and whose last chunk never does.
        "chunked": (
            post + b'Transfer-Encoding: chunked\r\n\r\n8\r\n{"data":\r\n',
            b"1\r\n \r\n" * 50,
        ),
        # A body shorter than its Content-Length, its last bytes never sent.
        "short body": (post + b'Content-Length: 100000\r\n\r\n{"data": [', b" " * 200),
    }


async def hold_unfinished(
    edge: EdgeProcess, key: str, per_kind: int, dribble_every_s: float
) -> dict[str, list[Raw]]:
    opened: dict[str, list[Raw]] = {}
    for kind, (start, rest) in unfinished_requests(key).items():
        opened[kind] = []
        for _ in range(per_kind):
            conn = await Raw.connect(edge.port)
            await conn.send(start)
            conn.start_dribble(rest, dribble_every_s)
            opened[kind].append(conn)
    return opened


async def assert_closed_after(
    opened: dict[str, list[Raw]], timeout_s: float
) -> dict[str, list[float]]:
    closed_after: dict[str, list[float]] = {}
    for kind, conns in opened.items():
        results = await asyncio.gather(*(c.until_closed(timeout_s + 30) for c in conns))
        closed_after[kind] = [after for _, after in results]
        for received, after in results:
            # Nothing is answered to a request that never arrived: the connection is closed.
            assert received == b"", (kind, received[:200])
            assert timeout_s - 0.1 <= after <= timeout_s + LATE_S, (kind, after)
        for c in conns:
            c.close()
    return closed_after


async def test_unfinished_requests_are_closed_at_the_default_timeout(
    settings: Settings, key: str
) -> None:
    """The issue's case at the default 30 s: 300 requests that never arrive whole, their bytes
    still trickling in, and 100 connections that send nothing, are all closed 30 s after they
    were opened and their descriptors freed."""
    async with edge_process(settings) as edge:
        fds_before = edge.open_fds()
        opened = await hold_unfinished(edge, key, per_kind=100, dribble_every_s=1.0)
        await wait_for_connections(edge, at_least=400)
        assert edge.client_sockets() == 400
        fds_held = edge.open_fds()
        closed_after = await assert_closed_after(opened, DEFAULT_READ_TIMEOUT_S)
        await wait_for_connections(edge, 0)
        fds_after = edge.open_fds()
        timed_out = [r for r in edge.requests_logged() if r["status"] == 408]
        assert edge.problems_logged() == []
    first = min(min(v) for v in closed_after.values())
    last = max(max(v) for v in closed_after.values())
    print(
        f"400 connections with unfinished requests closed {first:.2f}-{last:.2f} s after opening; "
        f"edge fds {fds_before} before, {fds_held} while held, {fds_after} after"
    )
    # What stays is the Postgres pool, grown by the key lookups.
    assert fds_after <= fds_before + DB_POOL_MAX
    # The two kinds whose headers arrived reached a handler waiting for the body: logged 408.
    assert len(timed_out) == 200
    assert {r["route"] for r in timed_out} == {"/v2/customer_audiences"}


async def test_a_shortened_timeout_closes_unfinished_requests_but_not_slow_whole_ones(
    settings: Settings, key: str
) -> None:
    async with edge_process(settings, COHORTSYNC_REQUEST_READ_TIMEOUT_S="1") as edge:
        opened = await hold_unfinished(edge, key, per_kind=20, dribble_every_s=0.2)
        # A request arriving in pieces within the bound is answered as usual...
        slow = await Raw.connect(edge.port)
        body = json.dumps({"data": []}).encode()
        whole = request(
            "POST",
            "/v2/customer_audiences",
            f"Authorization: ApiKey-v1 {key}",
            "Content-Type: application/json",
            body=body,
        )
        for i in range(0, len(whole), len(whole) // 3 + 1):
            await slow.send(whole[i : i + len(whole) // 3 + 1])
            await asyncio.sleep(0.25)  # the pause between pieces is the point
        status, _, answer = await slow.response()
        assert status == 204, answer  # nothing to change: accepted, not closed
        # ...and the clock is per request: a keep-alive connection idle between requests for
        # longer than the read timeout in all is not closed for it.
        for _ in range(3):
            await asyncio.sleep(0.6)  # idle between requests: the point
            await slow.send(request("GET", "/healthz"))
            status, _, _ = await slow.response()
            assert status == 200
        slow.close()
        await assert_closed_after(opened, 1.0)
        await wait_for_connections(edge, 0)
        assert edge.problems_logged() == []


async def test_idle_keepalive_connections_are_closed_after_the_bound(settings: Settings) -> None:
    async with edge_process(settings, COHORTSYNC_KEEPALIVE_TIMEOUT_S="2") as edge:
        # Half answered once and then idle, half never sending a byte.
        conns = [await Raw.connect(edge.port) for _ in range(100)]
        for conn in conns[:50]:
            await conn.send(request("GET", "/healthz"))
            assert (await conn.response())[0] == 200
        assert edge.client_sockets() == 100
        results = await asyncio.gather(*(c.until_closed(10) for c in conns))
        for received, after in results:
            assert received == b""
            assert 2.0 - 0.1 <= after <= 2.0 + LATE_S
        for conn in conns:
            conn.close()
        await wait_for_connections(edge, 0)


async def test_connections_past_the_cap_get_503_in_the_surface_shape_and_are_closed(
    settings: Settings, key: str
) -> None:
    async with edge_process(settings, COHORTSYNC_MAX_CONNECTIONS="20") as edge:
        held = [await Raw.connect(edge.port) for _ in range(20)]
        await wait_for_connections(edge, at_least=20)

        integration = await Raw.connect(edge.port)
        body = json.dumps({"data": []}).encode()
        await integration.send(
            request("POST", "/v2/customer_audiences", f"Authorization: ApiKey-v1 {key}", body=body)
        )
        status, headers, answer = await integration.response()
        assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
        error = json.loads(answer)
        assert error["StatusCode"] == 503
        assert error["errors"][0]["title"] == "Too many connections"
        assert (await integration.until_closed(5))[0] == b""
        integration.close()

        cdp = await Raw.connect(edge.port)
        await cdp.send(request("PUT", "/cdp/v2/customer_profiles/audiences", body=body))
        status, headers, answer = await cdp.response()
        assert (status, headers["retry-after"]) == (503, "1")
        assert set(json.loads(answer)) == {"StatusCode", "Error", "RequestUUID"}
        assert (await cdp.until_closed(5))[0] == b""
        cdp.close()

        # Probes are still answered past the cap, so a flood does not fail liveness.
        probe = await Raw.connect(edge.port)
        await probe.send(request("GET", "/healthz"))
        assert (await probe.response())[0] == 200
        assert (await probe.until_closed(5))[0] == b""
        probe.close()

        assert edge.client_sockets() == 20
        for conn in held[:5]:
            conn.close()
        await wait_for_connections(edge, 15)
        again = await Raw.connect(edge.port)
        await again.send(request("GET", "/v2/authping", f"Authorization: ApiKey-v1 {key}"))
        assert (await again.response())[0] == 204
        await again.send(request("GET", "/metrics"))
        _, _, metrics = await again.response()
        assert 'cohortsync_http_connections_refused_total{listener="public"} 2.0' in (
            metrics.decode()
        )
        assert 'cohortsync_http_connections_open{listener="public"} 16.0' in metrics.decode()
        for conn in [*held, again]:
            conn.close()
        await wait_for_connections(edge, 0)


async def edge_with_fd_limit(
    settings: Settings, soft: int, hard: int | None = None
) -> asyncio.subprocess.Process:
    """An edge process started under an open-file limit of ``soft`` (and ``hard``, else the
    current hard limit), its stderr piped."""
    _, current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = (soft, current_hard if hard is None else hard)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ingest.main",
        env=service_env(settings, COHORTSYNC_HTTP_PORT=str(free_port())),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),
    )


async def test_a_file_descriptor_limit_below_the_cap_stops_the_edge_naming_the_variable(
    settings: Settings,
) -> None:
    proc = await edge_with_fd_limit(settings, 512, 512)
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "COHORTSYNC_MAX_CONNECTIONS" in err.decode()


async def test_a_low_soft_fd_limit_is_raised_to_what_the_cap_needs(settings: Settings) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000:
        pytest.fail(f"this test needs a hard fd limit of 3000 or more, not {hard}")
    proc = await edge_with_fd_limit(settings, 256)
    try:
        assert proc.stderr is not None
        start = json.loads(await asyncio.wait_for(proc.stderr.readline(), 30))
        soft = fd_soft_limit(proc.pid)
    finally:
        proc.terminate()
        await proc.wait()
    assert start["event"] == "start"
    assert soft == start["fd_limit"] >= 2 * Settings().max_connections


async def test_help_names_the_connection_settings() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest.main", "--help", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    for name in (
        "COHORTSYNC_REQUEST_READ_TIMEOUT_S",
        "COHORTSYNC_KEEPALIVE_TIMEOUT_S",
        "COHORTSYNC_MAX_CONNECTIONS",
        "COHORTSYNC_OPS_PORT",
    ):
        assert name in out.decode()
