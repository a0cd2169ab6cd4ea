"""What a Redis persistence mode keeps of acknowledged changes when redis-server is SIGKILLed.

Writers accept batches with the edge's own ``accept.lua`` call into a redis-server of our own
(AOF, ``appendfsync`` always or everysec); the server is SIGKILLed mid-stream, started again on
the same files, and every acknowledged batch is looked for. Also measured: how many changes a
second each mode accepts, the price of ``always``'s fsync per write.

    python -m tests.system.redis_persistence [--seconds 3] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ingest.memberships import accept_call
from ingest.state import Scripts
from schemas import keys
from tests.system.servers import Fsync, OwnRedis

WRITERS = 4
BATCH = 100


@dataclass(frozen=True)
class Outcome:
    fsync: Fsync
    acknowledged: int
    missing: int
    per_second: float


async def _write(url: str, writer: int, acked: list[int], stop: asyncio.Event) -> None:
    """Batches of one writer into audience ``writer + 1`` until Redis goes away or ``stop``;
    ``acked`` gets the number of each batch the server answered."""
    client = aioredis.Redis.from_url(url, socket_timeout=2.0)
    scripts = Scripts(client)
    batch = 0
    try:
        while not stop.is_set():
            entries = [f"a{writer}-{batch}-{i}" for i in range(BATCH)]
            script_keys, args = accept_call({writer + 1: entries}, max_backlog=10**12)
            try:
                await scripts.accept(keys=script_keys, args=args)
            except (OSError, RedisError):
                return  # killed: this batch was not acknowledged
            acked.append(batch)
            batch += 1
    finally:
        await client.aclose(close_connection_pool=True)


async def _missing(url: str, acked: Sequence[list[int]]) -> int:
    """Acknowledged changes not in their backlog after the restart."""
    client = aioredis.Redis.from_url(url)
    try:
        missing = 0
        for writer, batches in enumerate(acked):
            raw = await client.lrange(keys.backlog_key(writer + 1), 0, -1)
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
            asyncio.create_task(_write(server.url, w, acked[w], stop)) for w in range(WRITERS)
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
    print(f"{'appendfsync':<12}{'acknowledged':>14}{'missing':>9}{'changes/s':>11}")
    for o in outcomes:
        print(f"{o.fsync:<12}{o.acknowledged:>14,}{o.missing:>9}{o.per_second:>11,.0f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
