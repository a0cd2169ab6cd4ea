"""``cohortsync-admin status``: /v1/status's numbers as a table and a few lines."""

from __future__ import annotations

import argparse

import msgspec

from admin.connections import connect, redis_client, scripts
from admin.output import PROG, clip, table
from admin.progress import duration
from admin.tenants import find_tenant
from core.snapshot import read_status
from schemas.settings import Settings
from schemas.status import Status


async def command(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    client = redis_client(settings.redis_url)
    try:
        tenant = None
        if args.tenant is not None:
            tenant = (await find_tenant(conn, args.tenant)).id
        found = await read_status(
            scripts(client, settings), conn, settings, args.page_size, tenant=tenant
        )
    finally:
        await client.aclose()
        await conn.close()
    if args.json:
        print(msgspec.json.encode(found).decode())
        return 0
    print(format_status(found, settings.queue_name))
    return 0


def format_status(found: Status, queue_name: str) -> str:
    """``cohortsync-admin status``: /v1/status's numbers as a table and three lines."""
    rows = [
        [
            str(a.id),
            clip(a.name, 40),
            f"{a.pending:,}",
            f"{a.applied:,}",
            f"{a.total:,}",
            f"{a.dropped:,}",
            f"{a.dead_lettered:,}",
            _eta(a.eta_seconds, a.pending),
        ]
        for a in found.audiences
    ]
    headers = ["audience", "name", "pending", "applied", "total", "dropped", "dead", "eta"]
    lines = [table(headers, rows, numeric_from=2) if rows else "no live audiences"]
    t = found.totals
    if found.next_cursor is not None:
        lines.append(f"(the first {len(rows):,}; {t.audiences_with_work:,} audiences have work)")
    q, rate = found.queue_depth, found.rate
    limit = f"{rate.configured_per_minute:,}/min" if rate.configured_per_minute else "none"
    pending = t.pending
    lines += [
        "",
        f"all audiences: accepted {t.accepted:,}, applied {t.applied:,}, dropped "
        f"{t.dropped:,}, dead {t.dead_lettered:,}",
        f"queue: backlog {q.backlog:,}, ready {q.ready:,}, in flight {q.in_flight:,}, "
        f"deferred {q.deferred:,} (arq queue {queue_name})",
        f"rate: limit {limit}, applied in the last minute {rate.measured_per_minute:,}; "
        f"workers alive: {found.workers_live}",
        f"pending: {pending:,} changes, all applied in {_eta(found.eta_seconds, pending)}",
    ]
    if found.tenants:
        rows = [
            [
                str(t.id),
                clip(t.hostname, 40),
                f"{t.pending:,}",
                f"{t.applied:,}",
                f"{t.rate_per_minute:,}/min" if t.rate_per_minute else "none",
                _eta(t.eta_seconds, t.pending),
            ]
            for t in found.tenants
        ]
        headers = ["tenant", "hostname", "pending", "applied", "rate", "eta"]
        lines += ["", "tenants with work, busiest first:", table(headers, rows, numeric_from=2)]
    if found.dead_letters:
        lines.append(
            f"dead letters: {found.dead_letters:,} changes failed permanently "
            f"(see {PROG} dead-letters list)"
        )
    return "\n".join(lines)


def _eta(seconds: float | None, pending: int) -> str:
    if pending == 0:
        return "done"
    return "unknown" if seconds is None else duration(seconds)
