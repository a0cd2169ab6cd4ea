"""``python -m tests.bench --quick`` runs every measurement and prints the whole table."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.bench.processes import ROOT
from tests.bench.table import HEADER

# One per row, in the order the table prints them; the numbers are not checked here (speed
# belongs to the benchmark, not to the test suite).
ROWS = [
    "edge acceptance",
    "edge latency p50 / p99",
    "worker capacity, rate limit lifted, 1 process",
    "worker capacity, rate limit lifted, 2 processes",
    "limiter accuracy",
    "limiter, busiest 1-second window",
    "fairness",
    "Redis bytes per queued user",
    "claim of 200 jobs",
    "/v1/audiences page",
    "full cursor read",
    "clear of a",
    "Redis time of a status call (first page)",
    "Redis time of a /metrics scrape",
    "DRR share spread",
    "tenant rates",
    "tenant drain",
    "new tenant's 50-user cohort",
    "worker capacity, 50 tenants (1 audience each) vs 1 tenant",
    "worker capacity, 50 tenants, limits lifted, 1 process, vs saq's",
]


@pytest.mark.timeout(240)
async def test_quick_bench_prints_every_row() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench",
        "--quick",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    table = [line for line in out.decode().splitlines() if line.startswith("| ")]
    assert [c.strip() for c in table[0].split("|")[1:-1]] == list(HEADER)
    rows = table[1:]
    assert len(rows) == len(ROWS)
    for row, name in zip(rows, ROWS, strict=True):
        cells = [c.strip() for c in row.split("|")[1:-1]]
        assert cells[0].startswith(name), row
        # A measurement that failed says "error:" and is marked MISS; none may fail.
        assert not cells[1].startswith("error:"), row
        assert cells[5] in ("PASS", "MISS"), row
