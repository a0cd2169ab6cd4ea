"""The fault suite's machinery: the stack as processes, probes, a stall sampler and the checks
every scenario ends with."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from core import redisconn
from tests.bench.processes import Child, Children, children, environment, free_port
from tests.support.redis_keys import KEYS
from tests.support.worker import memberships
from tests.system.report import REPORT, Row
from tests.system.senders import Ledger
from tests.system.servers import OwnPostgres, OwnRedis
from worker.drain import is_drained

READY_TIMEOUT_S = 30.0
SAMPLE_INTERVAL_S = 0.2
COUNTERS_CATCH_UP_S = 5.0
# Reading the end state takes well under a second; past this a read hangs.
VERIFY_TIMEOUT_S = 30.0


@dataclass
class Servers:
    postgres: OwnPostgres
    redis: OwnRedis


@dataclass
class Faulty:
    """One scenario's view: servers it may kill, a fresh database on them, clients, a key."""

    servers: Servers
    database_url: str
    redis_url: str
    db: asyncpg.Pool
    redis: aioredis.Redis
    key: str
    log_dir: Path


class Stack:
    """The edge and worker replicas as processes, with default settings but those given."""

    def __init__(
        self, group: Children, database_url: str, redis_url: str, **settings: str | int
    ) -> None:
        self._group = group
        self._env = environment(database_url, redis_url, http_host="127.0.0.1", **settings)
        self.edge_port = free_port()
        self.edge: Child | None = None
        self.workers: list[Child] = []
        self.killed: list[Child] = []
        self.metrics_ports: dict[int, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    async def start_edge(self) -> Child:
        env = self._env | {"COHORTSYNC_HTTP_PORT": str(self.edge_port)}
        self.edge = await self._group.start("edge", env, "-m", "ingest.main")
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if not self.edge.running:
                    raise RuntimeError(f"the edge exited at start-up:\n{self.edge.log()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(
                        f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return self.edge
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the edge was not ready within {READY_TIMEOUT_S:g} s")

    async def kill_edge(self) -> None:
        assert self.edge is not None
        self.edge.kill()
        await self.edge.process.wait()

    async def start_worker(self) -> Child:
        """A replica serving /healthz on a port of its own, so probes can be checked."""
        port = free_port()
        env = self._env | {"COHORTSYNC_WORKER_METRICS_PORT": str(port)}
        worker = await self._group.worker(env)
        self.metrics_ports[worker.pid] = port
        self.workers.append(worker)
        return worker

    async def kill_worker(self, worker: Child) -> None:
        worker.kill()
        await worker.process.wait()
        self.workers.remove(worker)
        self.killed.append(worker)

    def exited(self) -> list[Child]:
        """Replicas that stopped though nobody killed them."""
        return [w for w in self.workers if not w.running]

    def worker_env(self, worker: Child) -> dict[str, str]:
        return self._env | {"COHORTSYNC_WORKER_METRICS_PORT": str(self.metrics_ports[worker.pid])}


async def healthz(port: int) -> int | None:
    """A worker's /healthz status, None when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=5)
            ) as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def check_command(env: dict[str, str]) -> int:
    """``cohortsync-worker --check``'s exit code for the replica on ``env``'s metrics port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.main",
        "--check",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await proc.wait()


async def expect_health(stack: Stack, healthy: bool, within_s: float) -> list[str]:
    """Problems, if some replica's /healthz and ``--check`` do not say ``healthy`` within
    ``within_s`` (a replica that exited never will)."""
    want_status, want_exit = (200, 0) if healthy else (503, 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    pending = list(stack.workers)
    while pending:
        for worker in list(pending):
            status = await healthz(stack.metrics_ports[worker.pid])
            if status == want_status and await check_command(stack.worker_env(worker)) == want_exit:
                pending.remove(worker)
        if all(not w.running for w in pending) or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    word = "healthy" if healthy else "unhealthy"
    return [
        f"worker {w.pid} ({'running' if w.running else 'exited'}) not reported {word}"
        f" within {within_s:g} s"
        for w in pending
    ]


@dataclass
class Counts:
    accepted: int = 0
    applied: int = 0
    dropped: int = 0
    dead: int = 0


async def counts(redis: aioredis.Redis) -> dict[int, Counts]:
    """Every audience's counters (``Keys.stats``)."""
    found: dict[int, Counts] = {}
    prefix = KEYS.stats("")
    async for name in redis.scan_iter(match=prefix + "*", count=1000):
        raw = await redis.hgetall(name)  # type: ignore[misc]
        fields = {k.decode(): int(v) for k, v in raw.items()}
        found[int(name.decode()[len(prefix) :])] = Counts(
            fields.get("accepted", 0),
            fields.get("applied", 0),
            fields.get("dropped", 0),
            fields.get("dead", 0),
        )
    return found


class Progress:
    """Samples applied (+ dropped) changes every 0.2 s; the longest stall is the longest time
    nothing was finished while accepted work remained, outside declared outages (while Redis or
    Postgres is down nothing can be applied; the clock restarts when it is back)."""

    def __init__(self, redis_url: str) -> None:
        self._redis: aioredis.Redis = redisconn.connect(redis_url, socket_timeout=1.0)
        self._outages = 0
        self._last_finished = -1
        self._since = time.monotonic()
        self.longest_stall_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self._outages += 1
        try:
            yield
        finally:
            self._outages -= 1
            self._since = time.monotonic()

    async def _sample(self) -> None:
        now = time.monotonic()
        if self._outages:
            self._since = now
            return
        try:
            found = await counts(self._redis)
        except (OSError, aioredis.RedisError):
            found = None  # outside an outage an unreadable Redis is no progress
        if found is not None:
            finished = sum(c.applied + c.dropped + c.dead for c in found.values())
            remaining = sum(c.accepted for c in found.values()) - finished
            if finished != self._last_finished or remaining <= 0:
                self._last_finished = finished
                self._since = now
        self.longest_stall_s = max(self.longest_stall_s, now - self._since)

    async def _run(self) -> None:
        # Stopped by an event, not by cancelling: redis-py can turn a cancellation that lands in
        # its socket timeout into a TimeoutError, which _sample takes for an unreadable Redis.
        while not self._stop.is_set():
            await self._sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SAMPLE_INTERVAL_S)

    async def __aenter__(self) -> Progress:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._stop.set()
        await self._task
        await self._redis.aclose()


async def held_jobs(redis: aioredis.Redis) -> list[bytes]:
    """Ids of the jobs some replica holds a lease on (or held one lately)."""
    held: list[bytes] = await redis.zrange(KEYS.leases, 0, -1)
    return held


async def jobs_running(redis: aioredis.Redis, *, timeout_s: float) -> list[bytes]:
    """``held_jobs`` once some replica holds one (polled every few ms), or [] after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = await held_jobs(redis)
        if held or time.monotonic() >= deadline:
            return held
        await asyncio.sleep(0.002)


async def finished_within(redis_url: str, job_ids: list[bytes], *, timeout_s: float) -> float:
    """Seconds until none of ``job_ids`` is queued or leased any more (a running job sits under
    its lease, a lapsed lease puts it back on the queue, finishing it removes it from both);
    ``timeout_s`` if some still are by then."""
    client = aioredis.Redis.from_url(redis_url, socket_timeout=2.0)
    started = time.monotonic()
    try:
        while job_ids and time.monotonic() - started < timeout_s:
            with contextlib.suppress(OSError, aioredis.RedisError):
                queued = await client.zmscore(KEYS.queue, job_ids)
                leased = await client.zmscore(KEYS.leases, job_ids)
                job_ids = [
                    j
                    for j, q, held in zip(job_ids, queued, leased, strict=True)
                    if q is not None or held is not None
                ]
            if job_ids:
                await asyncio.sleep(SAMPLE_INTERVAL_S)
        return min(time.monotonic() - started, timeout_s)
    finally:
        await client.aclose()


async def wait_drained(redis: aioredis.Redis, stack: Stack, *, timeout_s: float) -> bool:
    """Whether, within ``timeout_s``, nothing is left queued or running; False at once when no
    replica is left running. Once the queue is empty the counters get a few seconds to catch
    up with it (they are checked afterwards, not waited for)."""
    # A deadline, not asyncio.timeout: its cancellation could be swallowed as a Redis timeout.
    deadline = time.monotonic() + timeout_s
    counters_behind_since: float | None = None
    while time.monotonic() < deadline and len(stack.exited()) < len(stack.workers):
        with contextlib.suppress(OSError, aioredis.RedisError):
            if await is_drained(redis, KEYS):
                found = await counts(redis)
                if all(c.applied + c.dropped + c.dead >= c.accepted for c in found.values()):
                    return True
                now = time.monotonic()
                counters_behind_since = counters_behind_since or now
                if now - counters_behind_since > COUNTERS_CATCH_UP_S:
                    return True
        await asyncio.sleep(SAMPLE_INTERVAL_S)
    return False


async def _compare(row: Row, ledger: Ledger, db: Any) -> list[str]:
    """Count in ``row.lost`` the profiles not in the state last acknowledged; a few examples."""
    examples: list[str] = []
    for cohort, members in ledger.expected.items():
        stored = await memberships(db, ledger.audiences[cohort])
        for profile, member in members.items():
            if stored.get(profile, (False, 0))[0] != member:
                row.lost += 1
                if len(examples) < 3:
                    examples.append(
                        f"{cohort}/{profile}: member={member} acknowledged last,"
                        f" stored (member, version)={stored.get(profile)}"
                    )
    return examples


async def verify(
    row: Row,
    ledger: Ledger,
    stack: Stack,
    redis: aioredis.Redis,
    db: Any,
    progress: Progress,
    *,
    stall_limit_s: float,
    drain_timeout_s: float,
) -> None:
    """Wait for the drain, fill ``row`` from what the stack did, add it to the report, then fail
    on any problem: not drained, the end state differs from what was acknowledged, a change was
    enqueued twice or dead-lettered, a counter does not add up, a replica exited, or applying
    stalled too long."""
    row.drained = await wait_drained(redis, stack, timeout_s=drain_timeout_s)
    if not row.drained:
        row.problems.append(f"not drained {drain_timeout_s:g} s after the last fault")
    row.sent = ledger.changes_sent
    row.acknowledged = ledger.changes_acknowledged
    row.answers_5xx = ledger.answers_5xx
    row.longest_stall_s = progress.longest_stall_s
    row.notes.append(
        f"{ledger.deliveries:,} deliveries, {ledger.deliveries_failed:,} retried,"
        f" {ledger.answered_duplicate:,} retries answered as duplicates"
    )
    REPORT.append(row)
    step = "reading the counters"
    try:
        async with asyncio.timeout(VERIFY_TIMEOUT_S):
            found = await counts(redis)
            row.dead = await redis.llen(KEYS.dead_letters)  # type: ignore[misc]
            step = "reading the memberships"
            examples = await _compare(row, ledger, db)
    except TimeoutError:
        row.problems.append(f"{step} took over {VERIFY_TIMEOUT_S:g} s")
        raise AssertionError("\n".join(row.problems)) from None
    row.applied = sum(c.applied for c in found.values())
    accepted = sum(c.accepted for c in found.values())
    row.duplicated = max(0, accepted - ledger.changes_acknowledged)
    problems = row.problems
    if ledger.never_acknowledged:
        problems.append(f"{ledger.never_acknowledged} batches never acknowledged")
    if row.lost:
        problems.append(
            f"{row.lost} profiles not in the state last acknowledged"
            + ("" if row.drained else " (not drained: not yet applied, or lost)")
            + ", e.g. "
            + "; ".join(examples)
        )
    if accepted < ledger.changes_acknowledged:
        problems.append(f"accepted {accepted} < acknowledged {ledger.changes_acknowledged}")
    if row.duplicated:
        problems.append(f"{row.duplicated} changes enqueued more than once")
    if row.dead:
        problems.append(f"{row.dead} dead letters")
    for audience, c in sorted(found.items()):
        if c.applied + c.dropped != c.accepted:
            problems.append(
                f"audience {audience}: applied {c.applied} + dropped {c.dropped}"
                f" != accepted {c.accepted}"
            )
    for worker in stack.exited():
        last = worker.log().strip().rpartition("\n")[2][:300]
        problems.append(f"worker {worker.pid} exited with {worker.process.returncode}: {last}")
    if row.longest_stall_s > stall_limit_s:
        problems.append(f"applying stalled {row.longest_stall_s:.1f} s (limit {stall_limit_s:g} s)")
    assert not problems, "\n".join(problems)


@contextlib.asynccontextmanager
async def scenario_stack(
    database_url: str, redis_url: str, log_dir: Path, **settings: str | int
) -> AsyncIterator[Stack]:
    async with children(log_dir) as group:
        yield Stack(group, database_url, redis_url, **settings)
