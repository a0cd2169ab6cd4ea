"""``cohortsync-admin migrate``'s Redis part: move what the key layout before namespaces holds
into the deployment's namespace, batch by batch (``core/scripts/upgrade.py``).

Each batch is one script that moves what it takes out of the old keys, so a run interrupted
anywhere and started again loses and duplicates nothing, and a run with nothing left to move
changes nothing. The steps that keep changes run before the last one, which removes the old
backlog total and active list that the edge and the worker look for.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import NamedTuple, TypeVar

import msgspec
from redis.asyncio import Redis

from core.scripts import Scripts
from core.scripts.upgrade import LegacyJob, Upgrade
from schemas import keys
from schemas.jobs import Change, DeadLetter

T = TypeVar("T")

# Keys, fields, entries or jobs per script call: a few milliseconds of Redis each.
BATCH = 500

_decode_letter = msgspec.json.Decoder(DeadLetter).decode
_encode_letter = msgspec.json.Encoder().encode
_decode_job = msgspec.msgpack.Decoder().decode


class Moved(NamedTuple):
    """What one upgrade moved into the namespace, and dropped."""

    backlog_entries: int = 0
    jobs_requeued: int = 0
    dead_letters: int = 0
    seen_keys: int = 0
    stats: int = 0
    versions: int = 0
    clears: int = 0
    config_fields: int = 0
    active_audiences: int = 0
    backlog_total: int = 0
    dropped_keys: int = 0
    aggregated: int = 0

    def lines(self, tag: str) -> list[str]:
        """What an operator reads: nothing when nothing was there to move."""
        parts = [
            (self.backlog_entries, "backlog entries"),
            (self.jobs_requeued, "queued or running jobs re-queued as backlog entries"),
            (self.dead_letters, "dead letters"),
            (self.seen_keys, "Amplitude de-duplication keys"),
            (self.stats, "counters of audiences"),
            (self.versions, "audience versions"),
            (self.clears, "audience clears"),
            (self.config_fields, "runtime settings"),
            (self.active_audiences, "active audiences"),
        ]
        moved = [f"{n:,} {what}" for n, what in parts if n]
        lines = []
        if moved:
            lines.append(
                f"moved from the Redis layout before namespaces to {tag}: " + ", ".join(moved)
            )
        if self.backlog_total:
            lines.append(
                f"added {self.backlog_total:,} to the backlog total (the old total's rest)"
            )
        if self.aggregated:
            lines.append(
                f"added the counters of {self.aggregated:,} audiences to the queue's totals "
                "(kept by the scripts from now on)"
            )
        if self.dropped_keys:
            lines.append(
                f"dropped {self.dropped_keys:,} old keys live processes rebuild (rate limiter, "
                "worker registry, applied counters)"
            )
        return lines

    def plus(self, other: Moved) -> Moved:
        return Moved(*(a + b for a, b in zip(self, other, strict=True)))


async def upgrade_redis(scripts: Scripts) -> Moved:
    """Move everything of the layout before namespaces into ``scripts``' namespace."""
    moved = Moved()
    for step in STEPS.values():
        moved = moved.plus(await step(scripts.redis, scripts.upgrade))
    return moved


async def _config(redis: Redis, up: Upgrade) -> Moved:
    return Moved(config_fields=await _merge_hash(redis, up.legacy.config, up.config))


async def _versions(redis: Redis, up: Upgrade) -> Moved:
    return Moved(versions=await _merge_hash(redis, up.legacy.versions, up.versions))


async def _clears(redis: Redis, up: Upgrade) -> Moved:
    return Moved(clears=await _merge_hash(redis, up.legacy.cleared, up.cleared))


async def _stats(redis: Redis, up: Upgrade) -> Moved:
    merged = 0
    async for audience in _suffixes(redis, up.legacy.stats_prefix):
        if audience.isdigit():
            merge = _audience_stats(up, int(audience))
            merged += bool(await _merge_hash(redis, up.legacy.stats(audience), merge))
    return Moved(stats=merged)


async def _tenants(redis: Redis, up: Upgrade) -> Moved:
    renamed = 0
    async for message_ids in _batches(_suffixes(redis, up.pre_tenant.seen_prefix)):
        renamed += await up.tenant_seen(message_ids)
    added, _ = await up.tenants()
    return Moved(seen_keys=renamed, active_audiences=added)


async def _seen(redis: Redis, up: Upgrade) -> Moved:
    renamed = 0
    async for message_ids in _batches(_suffixes(redis, up.legacy.seen_prefix)):
        renamed += await up.seen(message_ids)
    return Moved(seen_keys=renamed)


async def _backlogs(redis: Redis, up: Upgrade) -> Moved:
    entries = 0
    async for audience in _suffixes(redis, up.legacy.backlog_prefix):
        if audience.isdigit():
            while moved := await up.backlog(int(audience), BATCH):
                entries += moved
    return Moved(backlog_entries=entries)


async def _finish(redis: Redis, up: Upgrade) -> Moved:
    seconds = [int(s) async for s in _suffixes(redis, up.legacy.applied_prefix) if s.isdigit()]
    last = await up.finish(seconds)
    return Moved(
        active_audiences=last.audiences,
        backlog_total=last.backlog_total,
        dropped_keys=last.dropped,
    )


async def _aggregates(redis: Redis, up: Upgrade) -> Moved:
    """Counters written before the aggregates existed join them: every audience with a stats
    hash or a backlog in the namespace, once (run again, none joins)."""
    k = up.keys
    audiences = {a async for a in _suffixes(redis, k.stats("")) if a.isdigit()}
    audiences |= {a async for a in _suffixes(redis, k.backlog("")) if a.isdigit()}
    joined = 0
    ordered = sorted(audiences, key=int)
    for start in range(0, len(ordered), BATCH):
        joined += await up.aggregates(ordered[start : start + BATCH])
    return Moved(aggregated=joined)


def _audience_stats(up: Upgrade, audience_id: int) -> Callable[[Sequence[bytes]], Awaitable[int]]:
    return lambda fields: up.stats(audience_id, fields)


async def _merge_hash(
    redis: Redis, old: str, merge: Callable[[Sequence[bytes]], Awaitable[int]]
) -> int:
    """Merge an old hash's fields, a batch per call; returns the fields merged."""
    merged = 0
    fields = (field async for field, _ in redis.hscan_iter(old, count=BATCH))
    async for batch in _batches(fields):
        merged += await merge(batch)
    return merged


async def _letters(redis: Redis, up: Upgrade) -> Moved:
    """Move the old dead letters in order, each with its job id in the namespace's format."""
    moved = 0
    while head := await redis.lrange(up.legacy.dead_letters, 0, BATCH - 1):  # type: ignore[misc]
        moved += await up.letters([(raw, _renamed_letter(raw, up)) for raw in head])
    return Moved(dead_letters=moved)


def _renamed_letter(raw: bytes, up: Upgrade) -> bytes:
    """A dead letter as the namespace keeps it: only its job id changed format (the change's
    fields are the same list); one that cannot be read is kept as it is."""
    try:
        letter = _decode_letter(raw)
    except msgspec.DecodeError:
        return raw
    return _encode_letter(msgspec.structs.replace(letter, job_id=_job_id(letter.job_id, up)))


def _job_id(old_id: str, up: Upgrade) -> str:
    """The namespace's id of an old job id ``cs:<audience>:<version>``; others as they are."""
    audience_id, version = keys.parse_job_id(old_id)
    if not old_id.startswith(up.legacy.PREFIX) or not version:
        return old_id
    return up.keys.job_id(audience_id, version)


async def _jobs(redis: Redis, up: Upgrade) -> Moved:
    """Turn the old queue's and leases' jobs back into backlog entries, each audience's newest
    first: put at the head of backlogs whose older entries moved before, they end oldest first.
    A payload that holds no change is kept as a dead letter."""
    requeued = dead = 0
    while ids := await old_job_ids(redis, up):
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            payloads = await redis.mget([up.legacy.job(job_id) for job_id in batch])
            jobs = [legacy_job(job_id, p, up) for job_id, p in zip(batch, payloads, strict=True)]
            done, kept = await up.jobs(jobs)
            requeued, dead = requeued + done, dead + kept
    return Moved(jobs_requeued=requeued, dead_letters=dead)


async def old_job_ids(redis: Redis, up: Upgrade) -> list[str]:
    """The ids on the old queue and leases, newest version first. A job whose payload changed
    after it was read is left by its script, and read again here."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zrange(up.legacy.queue, 0, -1)
        pipe.zrange(up.legacy.leases, 0, -1)
        queued, leased = await pipe.execute()
    return sorted(
        {raw.decode() for raw in [*queued, *leased]},
        key=lambda job_id: keys.parse_job_id(job_id)[1],
        reverse=True,
    )


def legacy_job(job_id: str, payload: bytes | None, up: Upgrade) -> LegacyJob:
    """What an old job becomes: its change's backlog entry, or a dead letter when its payload
    holds no change (arq's job dict, args ``[audience, profile, member, version]``)."""
    audience_id, _ = keys.parse_job_id(job_id)
    if payload is None:
        return LegacyJob(job_id, audience_id, None, None)
    args: object = None
    try:
        args = _decode_job(payload).get("a")
        change = msgspec.convert(args, Change)
    except (msgspec.DecodeError, msgspec.ValidationError, AttributeError) as e:
        letter = DeadLetter(
            _job_id(job_id, up),
            args if isinstance(args, list) else [],
            f"unreadable job found when upgrading Redis: {e}"[:500],
            int(time.time() * 1000),
        )
        return LegacyJob(job_id, audience_id, payload, None, _encode_letter(letter))
    action: keys.Action = "add" if change.member else "delete"
    entry = keys.encode_entry(action, change.profile_id, change.version)
    return LegacyJob(job_id, change.audience_id, payload, entry)


async def _suffixes(redis: Redis, prefix: str) -> AsyncIterator[str]:
    """What follows ``prefix`` in the names of the keys that start with it (a SCAN)."""
    async for name in redis.scan_iter(match=prefix + "*", count=BATCH):
        yield name.decode()[len(prefix) :]


async def _batches(items: AsyncIterator[T]) -> AsyncIterator[list[T]]:
    batch: list[T] = []
    async for item in items:
        batch.append(item)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


Step = Callable[[Redis, Upgrade], Awaitable[Moved]]
# In this order: a clear is known before the changes it makes stale; the jobs, which left their
# backlogs' heads before the entries still there, go ahead of those once the backlogs moved; the
# keys the edge and the worker look for go last; then the keys from before tenants become the
# default tenant's; then counters from before the aggregates join the totals.
STEPS: dict[str, Step] = {
    "config": _config,
    "versions": _versions,
    "clears": _clears,
    "stats": _stats,
    "dead letters": _letters,
    "seen": _seen,
    "backlogs": _backlogs,
    "jobs": _jobs,
    "finish": _finish,
    "tenants": _tenants,
    "aggregates": _aggregates,
}
