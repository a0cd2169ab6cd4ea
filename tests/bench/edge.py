"""Edge rows: users accepted per second and request latency, beside arq's ``enqueue_job``."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from arq.connections import ArqRedis, RedisSettings, create_pool

from admin.api_keys import create_key
from schemas import keys
from tests.bench.backlog import profile_id
from tests.bench.processes import Child, Children, environment, free_port
from tests.bench.sender import Connection, request
from tests.bench.services import Services
from tests.bench.sizes import Sizes
from tests.bench.table import Row, rate, times
from tests.support.redis_keys import KEYS

BATCH = 1000
# Distinct request bodies the senders cycle through (distinct profiles in each).
BODIES = 40
SENDERS = 4
ACCEPT_TARGET_PER_S = 300_000
ACCEPT_TARGET_RATIO = 100
P99_TARGET_S = 0.050
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Edge:
    port: int
    requests: list[bytes]


def _body(audience_id: int, first: int) -> bytes:
    # One cohort per request, as Amplitude sends them; every tenth change a delete.
    data = [
        {
            "action": "delete" if n % 10 == 9 else "add",
            "profileIntegrationId": profile_id(first + n),
            "audienceId": audience_id,
        }
        for n in range(BATCH)
    ]
    return msgspec.json.encode({"data": data})


async def start_edge(svc: Services, children: Children) -> tuple[Child, int, str]:
    """An edge process, ready: its port and a new API key of scope all."""
    api_key = (await create_key(svc.database_url, "bench")).key
    port = free_port()
    env = environment(svc.database_url, svc.redis_url, http_host="127.0.0.1", http_port=port)
    child = await children.start("edge", env, "-m", "ingest.main")
    ping = request("GET", "/readyz", port)
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            if not child.running:
                raise RuntimeError(f"the edge exited at start-up:\n{child.log()}")
            try:
                conn = await Connection.open(port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            status, _ = await conn.send(ping)
            await conn.close()
            if status == 200:
                break
            await asyncio.sleep(0.1)
    return child, port, api_key


async def _start_edge(svc: Services, children: Children) -> tuple[Child, Edge]:
    audiences = [await svc.new_audience(f"edge-{i}") for i in range(4)]
    child, port, api_key = await start_edge(svc, children)
    requests = [
        request(
            "POST",
            "/v2/customer_audiences",
            port,
            _body(audiences[i % len(audiences)], i * BATCH),
            api_key=api_key,
        )
        for i in range(BODIES)
    ]
    return child, Edge(port, requests)


async def _for_a_while(
    workers: int, warmup_s: float, window_s: float, step: Callable[[int, int], Awaitable[int]]
) -> float:
    """Run ``workers`` loops of ``step(worker, round) -> users``; users per second over the
    window after the warm-up, counting only steps that started and ended inside it."""
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup_s
    end = start + window_s
    counted = [0] * workers

    async def run(w: int) -> None:
        n = 0
        while (began := loop.time()) < end:
            users = await step(w, n)
            n += 1
            if began >= start and loop.time() <= end:
                counted[w] += users

    await asyncio.gather(*(run(w) for w in range(workers)))
    return sum(counted) / window_s


async def _edge_rate(edge: Edge, sizes: Sizes, redis: aioredis.Redis) -> float:
    conns = [await Connection.open(edge.port) for _ in range(sizes.connections)]
    sent = 0

    async def step(w: int, n: int) -> int:
        nonlocal sent
        await conns[w].expect(edge.requests[(w + n * len(conns)) % len(edge.requests)], 204)
        sent += BATCH
        return BATCH

    try:
        per_s = await _for_a_while(len(conns), sizes.accept_warmup_s, sizes.accept_s, step)
    finally:
        for c in conns:
            await c.close()
    # A 204 must mean queued: every user acknowledged is in a backlog.
    queued = int(await redis.get(KEYS.backlog_total) or 0)
    if queued != sent:
        raise RuntimeError(f"{sent} users acknowledged but {queued} queued")
    return per_s


async def _arq_rate(pool: ArqRedis, sizes: Sizes) -> float:
    async def step(w: int, n: int) -> int:
        await pool.enqueue_job(keys.APPLY_FUNCTION, 1, profile_id(w * 10**8 + n), True)
        return 1

    # A shorter window: arq's rate is steady after a fraction of a second.
    window_s = max(1.0, sizes.accept_s / 2)
    return await _for_a_while(sizes.connections, sizes.accept_warmup_s / 2, window_s, step)


async def _edge_latencies(edge: Edge, sizes: Sizes) -> list[float]:
    conns = [await Connection.open(edge.port) for _ in range(SENDERS)]
    took: list[float] = []

    async def sender(w: int) -> None:
        for n in range(sizes.latency_requests):
            raw = edge.requests[(w + n * SENDERS) % len(edge.requests)]
            began = time.perf_counter()
            await conns[w].expect(raw, 204)
            took.append(time.perf_counter() - began)

    try:
        await asyncio.gather(*(sender(w) for w in range(SENDERS)))
    finally:
        for c in conns:
            await c.close()
    return took


async def _arq_latencies(pool: ArqRedis, sizes: Sizes) -> list[float]:
    took: list[float] = []

    async def sender(w: int) -> None:
        for n in range(sizes.arq_latency_batches):
            began = time.perf_counter()
            for i in range(BATCH):
                await pool.enqueue_job(keys.APPLY_FUNCTION, 1, profile_id(n * BATCH + i), True)
            took.append(time.perf_counter() - began)

    await asyncio.gather(*(sender(w) for w in range(SENDERS)))
    return took


def _percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def edge_rows(svc: Services, children: Children, sizes: Sizes) -> list[Row]:
    """Acceptance rate and latency of one edge process, then arq's on the same Redis."""
    await svc.reset()
    child, edge = await _start_edge(svc, children)
    try:
        edge_rate = await _edge_rate(edge, sizes, svc.redis)
        await svc.redis.flushall()
        edge_took = await _edge_latencies(edge, sizes)
    finally:
        await child.stop()
    await svc.redis.flushall()
    pool = await create_pool(RedisSettings.from_dsn(svc.redis_url))
    try:
        arq_rate = await _arq_rate(pool, sizes)
        await svc.redis.flushall()
        arq_took = await _arq_latencies(pool, sizes)
    finally:
        await pool.aclose()
    await svc.redis.flushall()

    ratio = edge_rate / arq_rate
    p50, p99 = _percentile(edge_took, 50), _percentile(edge_took, 99)
    arq_p50, arq_p99 = _percentile(arq_took, 50), _percentile(arq_took, 99)
    return [
        Row(
            f"edge acceptance, 1000-action requests, 1 process, {sizes.connections} connections",
            rate(edge_rate, "users"),
            f"arq enqueue_job per user, {sizes.connections} concurrent: {rate(arq_rate, 'users')}",
            times(ratio),
            f"≥ {ACCEPT_TARGET_PER_S:,}/s and ≥ {ACCEPT_TARGET_RATIO}x",
            edge_rate >= ACCEPT_TARGET_PER_S and ratio >= ACCEPT_TARGET_RATIO,
        ),
        Row(
            f"edge latency p50 / p99, {SENDERS} senders x 1000-user batches "
            f"({len(edge_took)} requests)",
            f"{_ms(p50)} / {_ms(p99)}",
            f"arq, 1000 enqueue_job per batch: {_ms(arq_p50)} / {_ms(arq_p99)}",
            times(arq_p99 / p99),
            f"p99 ≤ {_ms(P99_TARGET_S)}",
            p99 <= P99_TARGET_S,
        ),
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"
