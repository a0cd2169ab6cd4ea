"""``python -m tests.bench [--quick]``: run every benchmark and print one table."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.bench import (
    capacity,
    claims,
    drain,
    edge,
    fairness,
    memory,
    postgres,
    rate,
    shares,
    status,
    tenant_capacity,
    tenants,
)
from tests.bench.processes import Children, children
from tests.bench.services import Services, services
from tests.bench.sizes import FULL, QUICK, Sizes
from tests.bench.table import Row, failed, render

Measure = Callable[[Services, Children, Sizes], Awaitable[list[Row]]]

# Each measurement, with the rows it yields should it fail (so the table always has them all).
MEASUREMENTS: list[tuple[str, Measure, list[tuple[str, str]]]] = [
    (
        "edge",
        edge.edge_rows,
        [("edge acceptance", "≥ 300,000/s and ≥ 100x"), ("edge latency p50 / p99", "p99 ≤ 50 ms")],
    ),
    (
        "capacity",
        capacity.capacity_rows,
        [
            ("worker capacity, rate limit lifted, 1 process", "≥ 0.9x per process"),
            ("worker capacity, rate limit lifted, 2 processes", "≥ 0.9x per process"),
        ],
    ),
    (
        "rate",
        rate.rate_rows,
        [("limiter accuracy", "within ±1%"), ("limiter, busiest 1-second window", "≤ 1.00")],
    ),
    ("fairness", fairness.fairness_rows, [("fairness", "≤ 10 s")]),
    ("memory", memory.memory_rows, [("Redis bytes per queued user", "≤ 50 B")]),
    ("claims", claims.claim_rows, [("claim cost while others run many jobs", "≤ 2x (flat)")]),
    (
        "postgres",
        postgres.postgres_rows,
        [
            ("/v1/audiences page", "≤ 50 ms"),
            ("full cursor read", "≤ 60 s"),
            ("clear of a", "≤ 100 ms"),
        ],
    ),
    (
        "status",
        status.status_rows,
        [
            ("Redis time of a status call (first page)", "≤ 1 ms"),
            ("Redis time of a /metrics scrape", "≤ 1 ms"),
        ],
    ),
    ("shares", shares.share_rows, [("DRR share spread", "±10%")]),
    ("tenants", tenants.tenant_rate_rows, [("tenant rates", "each within ±2%")]),
    (
        "drain",
        drain.drain_rows,
        [("tenant drain", "each within ±2%"), ("new tenant's 50-user cohort", "≤ 2 s")],
    ),
    (
        "tenant-capacity",
        tenant_capacity.tenant_capacity_rows,
        [
            ("worker capacity, 1,000 tenants vs 1 tenant", "≥ 0.8x"),
            ("worker capacity vs saq's and arq's no-op workers", "≥ 0.9x saq"),
        ],
    ),
]


async def run(
    measurements: list[tuple[str, Measure, list[tuple[str, str]]]], sizes: Sizes, work_dir: Path
) -> list[Row]:
    rows: list[Row] = []
    async with services(work_dir) as svc:
        for name, measure, expected in measurements:
            began = time.monotonic()
            async with children(work_dir) as group:
                try:
                    rows += await measure(svc, group, sizes)
                except Exception as e:
                    traceback.print_exc()
                    rows += [failed(what, target, e) for what, target in expected]
            print(f"  {name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
    parser.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        choices=[name for name, _, _ in MEASUREMENTS],
        help="run only this measurement (repeatable)",
    )
    args = parser.parse_args()
    chosen = [m for m in MEASUREMENTS if not args.only or m[0] in args.only]
    with tempfile.TemporaryDirectory(prefix="cohortsync-bench-") as tmp:
        rows = asyncio.run(run(chosen, QUICK if args.quick else FULL, Path(tmp)))
    print(render(rows))
    # A MISS is a result; a measurement that could not be made is a failure.
    if any(r.error for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
