"""What a Redis persistence mode keeps of acknowledged changes when redis-server is SIGKILLed.

Writers accept batches with the edge's own ``accept.lua`` call into a redis-server of our own
(AOF, ``appendfsync`` always or everysec); the server is SIGKILLed mid-stream, started again on
the same files, and every acknowledged batch is looked for. Also measured: how many changes a
second each mode accepts (``always`` fsyncs before every answer), and, by tracing the fsync
calls of an ``everysec`` server, what a power loss at that moment could have taken.

    python -m tests.system.redis_persistence [--seconds 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schemas import keys
from tests.support.redis_keys import KEYS, scripts
from tests.system.servers import Fsync, OwnRedis

WRITERS = 4
BATCH = 100


@dataclass(frozen=True)
class Outcome:
    fsync: Fsync
    acknowledged: int
    missing: int
    per_second: float


async def _write(
    url: str, writer: int, acked: list[int], stop: asyncio.Event, acked_at: list[float]
) -> None:
    """Batches of one writer into audience ``writer + 1`` until Redis goes away or ``stop``;
    ``acked`` gets the number of each batch the server answered, ``acked_at`` when."""
    client = aioredis.Redis.from_url(url, socket_timeout=2.0)
    backlogs = scripts(client).backlogs
    batch = 0
    try:
        while not stop.is_set():
            entries = [f"a{writer}-{batch}-{i}" for i in range(BATCH)]
            try:
                await backlogs.accept({writer + 1: entries}, max_backlog=10**12)
            except (OSError, RedisError):
                return  # killed: this batch was not acknowledged
            acked.append(batch)
            acked_at.append(time.time())
            batch += 1
    finally:
        await client.aclose(close_connection_pool=True)


async def _missing(url: str, acked: Sequence[list[int]]) -> int:
    """Acknowledged changes not in their backlog after the restart."""
    client = aioredis.Redis.from_url(url)
    try:
        missing = 0
        for writer, batches in enumerate(acked):
            raw = await client.lrange(KEYS.backlog(writer + 1), 0, -1)
            present = {keys.decode_entry(e.decode())[1] for e in raw}
            for batch in batches:
                missing += sum(f"{writer}-{batch}-{i}" not in present for i in range(BATCH))
        return missing
    finally:
        await client.aclose()


async def measure(fsync: Fsync, work_dir: Path, seconds: float) -> Outcome:
    """One run: write for ``seconds``, SIGKILL the server mid-stream, restart it, count."""
    server = OwnRedis(work_dir, fsync)
    server.start()
    try:
        acked: list[list[int]] = [[] for _ in range(WRITERS)]
        stop = asyncio.Event()
        started = time.monotonic()
        writers = [
            asyncio.create_task(_write(server.url, w, acked[w], stop, [])) for w in range(WRITERS)
        ]
        await asyncio.sleep(seconds)
        server.kill()  # while every writer has a batch in flight
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.gather(*writers)
        server.start()
        acknowledged = sum(len(b) for b in acked) * BATCH
        return Outcome(
            fsync, acknowledged, await _missing(server.url, acked), acknowledged / elapsed
        )
    finally:
        server.kill()


@dataclass(frozen=True)
class Window:
    """What a power loss at the moment of the kill could have taken with ``everysec``."""

    seconds: float
    acknowledged: int
    at_risk: int


def _fsync_starts(trace: Path) -> list[float]:
    """Start times (epoch s) of the fdatasync/fsync calls that returned, from ``strace -ttt -T``.

    A finished call reads ``<pid> <t> fdatasync(7) = 0 <0.000512>``; one another thread
    interrupted ends as ``<pid> <t> <... fdatasync resumed>) = 0 <0.000512>``, ``t`` its end.
    """
    starts = []
    for line in trace.read_text().splitlines():
        fields = line.split()
        if len(fields) < 3 or "sync" not in line or "= 0 <" not in line:
            continue
        at, took = float(fields[1]), float(line.rpartition("<")[2].rstrip(">"))
        starts.append(at - took if "resumed>" in line else at)
    return starts


async def power_loss_window(work_dir: Path, seconds: float) -> Window:
    """With ``everysec``: the acknowledged changes not yet covered by a finished fsync when the
    server is killed, found by tracing its fsync calls (strace). A process crash keeps them (the
    kernel has them); a power loss or kernel crash would not. An upper bound: the kernel also
    writes dirty pages back on its own."""
    server = OwnRedis(work_dir, "everysec")
    server.start()
    trace = work_dir / "fsync.trace"
    tracer = await asyncio.create_subprocess_exec(
        "strace", "-f", "-ttt", "-T", "-e", "trace=fdatasync,fsync", "-o", str(trace),
        "-p", str(server.pid),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)  # attached to every thread, the fsync one included
        acked: list[list[int]] = [[] for _ in range(WRITERS)]
        acked_at: list[float] = []
        stop = asyncio.Event()
        writers = [
            asyncio.create_task(_write(server.url, w, acked[w], stop, acked_at))
            for w in range(WRITERS)
        ]
        await asyncio.sleep(seconds)
        killed_at = time.time()
        server.kill()
        stop.set()
        await asyncio.gather(*writers)
        await asyncio.wait_for(tracer.wait(), 10)
    finally:
        if tracer.returncode is None:
            tracer.kill()
        server.kill()
    synced = max((s for s in _fsync_starts(trace) if s < killed_at), default=0.0)
    at_risk = sum(t > synced for t in acked_at) * BATCH
    return Window(killed_at - synced, len(acked_at) * BATCH, at_risk)


async def run(seconds: float, runs: int) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="cs-aof-") as tmp:
        for n in range(runs):
            for fsync in ("always", "everysec"):
                outcomes.append(await measure(fsync, Path(tmp) / f"{fsync}-{n}", seconds))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="writing before the SIGKILL")
    parser.add_argument("--runs", type=int, default=3, help="kills per mode")
    args = parser.parse_args()
    outcomes = asyncio.run(run(args.seconds, args.runs))
    print("redis-server SIGKILLed mid-stream, restarted on its files:")
    print(f"{'appendfsync':<12}{'acknowledged':>14}{'missing':>9}{'changes/s':>11}")
    for o in outcomes:
        print(f"{o.fsync:<12}{o.acknowledged:>14,}{o.missing:>9}{o.per_second:>11,.0f}")
    if shutil.which("strace") is None:
        print("(no strace: the power-loss window of everysec is not measured)")
        return
    print("everysec, what a power loss at the kill could take (strace of its fsync calls):")
    print(f"{'unsynced s':>10}{'acknowledged':>14}{'at risk':>9}")
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="cs-aof-") as tmp:
            w = asyncio.run(power_loss_window(Path(tmp), args.seconds))
        print(f"{w.seconds:>10.2f}{w.acknowledged:>14,}{w.at_risk:>9,}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
