"""Upgrading Redis from the layout before namespaces: its keys (``LegacyKeys``) and the scripts
that move them into a deployment's namespace, one batch per call (``cohortsync-admin migrate``).

Every step is atomic and idempotent: what it moves leaves the old key in the same step, so an
upgrade interrupted anywhere and run again moves everything once. The old layout lived on one
Redis node (its scripts derived keys from data), so scripts may touch old and new keys together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Literal, NamedTuple, cast

import redis.exceptions
from redis.asyncio import Redis

from core.scripts.backlogs import aggregate_keys
from schemas.keys import ARQ_JOB_PREFIX, ARQ_RETRY_PREFIX, DEFAULT_TENANT, Keys
from schemas.lua import source

MIGRATE_COMMAND = "cohortsync-admin migrate"
# The start-up check must not hold a process up when Redis does not answer.
PENDING_CHECK_TIMEOUT_S = 2.0


class LegacyKeys:
    """The Redis keys before namespaces (before commit 4c72216): every key ``cs:...`` whatever
    ``COHORTSYNC_QUEUE_NAME`` said, except arq's queue, named by it; job ids ``cs:<audience>:
    <version>``, their payloads (``[audience, profile, member, version]``) under arq's prefix."""

    __slots__ = ("queue",)
    PREFIX = "cs:"
    backlog_prefix = "cs:backlog:"
    backlog_total = "cs:backlog:total"
    active_list = "cs:active"
    active_set = "cs:active:set"
    versions = "cs:versions"
    cleared = "cs:cleared"
    stats_prefix = "cs:stats:"
    config = "cs:config"
    limiter = "cs:limiter"
    dead_letters = "cs:dead"
    leases = "cs:leases"
    seen_prefix = "cs:seen:amplitude:"
    workers = "cs:workers"
    applied_prefix = "cs:applied:"

    def __init__(self, queue_name: str) -> None:
        self.queue = queue_name

    def backlog(self, audience_id: int | str) -> str:
        return f"{self.backlog_prefix}{audience_id}"

    def stats(self, audience_id: int | str) -> str:
        return f"{self.stats_prefix}{audience_id}"

    def seen(self, message_id: str) -> str:
        return f"{self.seen_prefix}{message_id}"

    def applied_second(self, second: int) -> str:
        return f"{self.applied_prefix}{second}"

    def job(self, job_id: str) -> str:
        return ARQ_JOB_PREFIX + job_id

    def retry(self, job_id: str) -> str:
        return ARQ_RETRY_PREFIX + job_id


class PreTenantKeys:
    """The namespace's keys before tenants that are now each tenant's (the others kept their
    names): one round-robin, rate limiter, set of counters and de-duplication ids for all."""

    __slots__ = (
        "active_list",
        "active_set",
        "audiences_idle",
        "audiences_pending",
        "dispatch_credit",
        "limiter",
        "seen_prefix",
    )

    def __init__(self, keys: Keys) -> None:
        tag = keys.tag
        self.active_list = f"{tag}:active"
        self.active_set = f"{tag}:active:set"
        self.dispatch_credit = f"{tag}:dispatch:credit"
        self.audiences_pending = f"{tag}:audiences:pending"
        self.audiences_idle = f"{tag}:audiences:idle"
        self.limiter = f"{tag}:limiter"
        self.seen_prefix = f"{tag}:seen:amplitude:"

    def seen(self, message_id: str) -> str:
        return f"{self.seen_prefix}{message_id}"


class LegacyJob(NamedTuple):
    """One old job as read, and what it becomes: a backlog ``entry``, or else a dead ``letter``
    (its payload held no change); ``payload`` None when it had none (another run finished it)."""

    job_id: str
    audience_id: int
    payload: bytes | None
    entry: str | None
    letter: bytes = b""


class LastStep(NamedTuple):
    """What ``Upgrade.finish`` did."""

    audiences: int
    backlog_total: int
    dropped: int


Merge = Literal["add", "max", "keep"]


class Upgrade:
    """The upgrade scripts of one deployment (its namespace is the old queue's name too)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys
        self.legacy = LegacyKeys(keys.namespace)
        self.pre_tenant = PreTenantKeys(keys)
        self._tenants = redis.register_script(source("upgrade_tenants"))
        self._backlog = redis.register_script(source("upgrade_backlog"))
        self._jobs = redis.register_script(source("upgrade_jobs"))
        self._letters = redis.register_script(source("upgrade_letters"))
        self._fields = redis.register_script(source("upgrade_fields"))
        self._seen = redis.register_script(source("upgrade_seen"))
        self._finish = redis.register_script(source("upgrade_finish"))
        self._aggregates = redis.register_script(source("build_aggregates"))

    async def pending(self) -> bool:
        """True while Redis holds the old layout's backlog total or an active list from before
        namespaces or before tenants."""
        old = self.legacy
        return bool(
            await self._redis.exists(
                old.backlog_total, old.active_list, self.pre_tenant.active_list
            )
        )

    async def tenants(self) -> tuple[int, bool]:
        """Make the keys from before tenants the default tenant's; returns (audiences added to
        its round-robin, whether the totals were split now)."""
        old, k = self.pre_tenant, self.keys
        t = k.tenant(DEFAULT_TENANT)
        others = [
            k.tenant(int(raw)).totals
            for raw in await cast(Awaitable[set[bytes]], self._redis.smembers(k.tenants_known))
            if int(raw) != DEFAULT_TENANT
        ]
        added, split = await self._tenants(
            keys=[
                old.active_list,
                old.active_set,
                old.dispatch_credit,
                old.audiences_pending,
                old.audiences_idle,
                old.limiter,
                t.active_list,
                t.active_set,
                t.audiences_pending,
                t.audiences_idle,
                t.totals,
                k.totals,
                k.tenants_pending,
                k.tenants_known,
                k.tenants_due,
                *others,
            ],
            args=[DEFAULT_TENANT],
        )
        return int(added), bool(split)

    async def tenant_seen(self, message_ids: Sequence[str]) -> int:
        """Rename de-duplication keys from before tenants to the default tenant's."""
        t = self.keys.tenant(DEFAULT_TENANT)
        script_keys = [name for m in message_ids for name in (self.pre_tenant.seen(m), t.seen(m))]
        return int(await self._seen(keys=script_keys)) if script_keys else 0

    async def backlog(self, audience_id: int, most: int) -> int:
        """Move up to ``most`` of the newest entries of an old backlog to the head of the
        audience's backlog; 0 once it is empty."""
        old, k = self.legacy, self.keys
        moved = await self._backlog(
            keys=[
                old.backlog(audience_id),
                old.backlog_total,
                k.backlog(audience_id),
                k.backlog_total,
                k.tenant(DEFAULT_TENANT).active_list,
                k.tenant(DEFAULT_TENANT).active_set,
            ],
            args=[audience_id, most],
        )
        return int(moved)

    async def jobs(self, jobs: Sequence[LegacyJob]) -> tuple[int, int]:
        """Turn old jobs (each audience's newest first) into backlog entries or dead letters;
        returns (entries re-queued, letters kept)."""
        old, k = self.legacy, self.keys
        script_keys = [
            old.queue,
            old.leases,
            k.tenant(DEFAULT_TENANT).active_list,
            k.tenant(DEFAULT_TENANT).active_set,
            k.backlog_total,
            k.dead_letters,
        ]
        args: list[str | int | bytes] = []
        for job in jobs:
            script_keys += [
                old.job(job.job_id),
                old.retry(job.job_id),
                k.backlog(job.audience_id),
                k.stats(job.audience_id),
            ]
            args += [job.job_id, job.audience_id, job.payload or b"", job.entry or "", job.letter]
        script_keys += [k.tenants_due, *aggregate_keys(k, DEFAULT_TENANT)]
        requeued, dead = await self._jobs(keys=script_keys, args=args)
        return int(requeued), int(dead)

    async def letters(self, pairs: Sequence[tuple[bytes, bytes]]) -> int:
        """Move old dead letters, (letter as read from the old head, letter to append) in
        order; fewer than given when the old head changed meanwhile."""
        args = [value for pair in pairs for value in pair]
        moved = await self._letters(
            keys=[self.legacy.dead_letters, self.keys.dead_letters], args=args
        )
        return int(moved)

    async def versions(self, audience_ids: Sequence[bytes]) -> int:
        return await self._merge(self.legacy.versions, self.keys.versions, "max", audience_ids)

    async def cleared(self, audience_ids: Sequence[bytes]) -> int:
        return await self._merge(self.legacy.cleared, self.keys.cleared, "max", audience_ids)

    async def stats(self, audience_id: int, fields: Sequence[bytes]) -> int:
        old, new = self.legacy.stats(audience_id), self.keys.stats(audience_id)
        return await self._merge(old, new, "add", fields, aggregate_keys(self.keys, DEFAULT_TENANT))

    async def config(self, fields: Sequence[bytes]) -> int:
        return await self._merge(self.legacy.config, self.keys.config, "keep", fields)

    async def _merge(
        self, old: str, new: str, how: Merge, fields: Sequence[bytes], also: Sequence[str] = ()
    ) -> int:
        if not fields:
            return 0
        args = [how, DEFAULT_TENANT, *fields]
        return int(await self._fields(keys=[old, new, *also], args=args))

    async def aggregates(self, audience_ids: Sequence[str]) -> int:
        """Bring audiences' counters written before the aggregates existed into them (once);
        returns how many joined."""
        if not audience_ids:
            return 0
        k = self.keys
        script_keys = aggregate_keys(k, DEFAULT_TENANT)
        for audience in audience_ids:
            script_keys += [k.backlog(audience), k.stats(audience)]
        args: list[str | int] = [DEFAULT_TENANT, *audience_ids]
        return int(await self._aggregates(keys=script_keys, args=args))

    async def seen(self, message_ids: Sequence[str]) -> int:
        """Rename old Amplitude de-duplication keys, keeping their TTLs."""
        script_keys = [
            name
            for m in message_ids
            for name in (self.legacy.seen(m), self.keys.tenant(DEFAULT_TENANT).seen(m))
        ]
        return int(await self._seen(keys=script_keys)) if script_keys else 0

    async def finish(self, applied_seconds: Sequence[int]) -> LastStep:
        """The last step: active audiences merged, the rest of the old total added, and the
        old limiter, worker registry and ``applied_seconds`` counters dropped."""
        old, k = self.legacy, self.keys
        counters = [old.applied_second(s) for s in applied_seconds]
        added, total, dropped = await self._finish(
            keys=[
                old.active_list,
                old.active_set,
                k.tenant(DEFAULT_TENANT).active_list,
                k.tenant(DEFAULT_TENANT).active_set,
                old.backlog_total,
                k.backlog_total,
                old.limiter,
                old.workers,
                *counters,
            ]
        )
        return LastStep(int(added), int(total), int(dropped))


async def warn_if_pending(upgrade: Upgrade, logger: logging.Logger) -> None:
    """Log one warning when Redis still holds the layout before namespaces (at start-up); a
    Redis that does not answer is some other check's business."""
    try:
        async with asyncio.timeout(PENDING_CHECK_TIMEOUT_S):
            pending = await upgrade.pending()
    except (redis.exceptions.RedisError, OSError, TimeoutError):
        return
    if pending:
        logger.warning(
            "Redis holds queued changes in the key layout before namespaces (%s, %s): they wait "
            "until `%s` moves them under %s",
            upgrade.legacy.backlog_total,
            upgrade.legacy.active_list,
            MIGRATE_COMMAND,
            upgrade.keys.tag,
        )
