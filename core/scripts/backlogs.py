"""The scripts that write backlogs: accept, next_version, mark_cleared (edge), replay (admin)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from schemas.keys import DEFAULT_TENANT, SEEN_TTL_S, Keys
from schemas.lua import source

AcceptOutcome = Literal["accepted", "full", "seen"]
# accept.lua's first reply value, by what it did.
_ACCEPT_OUTCOMES: dict[int, AcceptOutcome] = {1: "accepted", 0: "full", 2: "seen"}


class Accepted(NamedTuple):
    """What ``accept.lua`` did: ``accepted`` ``number`` changes, or nothing because the backlog
    is ``full`` (``number`` is then the backlog total) or the message was ``seen`` before."""

    outcome: AcceptOutcome
    number: int
    # When accepted: the tenant's pending changes, these included, and the rate its changes
    # are dispatched at (None: no worker published one yet).
    pending: int = 0
    rate_per_minute: int | None = None

    def eta_seconds(self, configured_rate: int) -> float | None:
        """At most how long until these changes are applied: the tenant's pending at its rate
        (its audiences share it, these changes are among the pending); None without a limit."""
        rate = self.rate_per_minute if self.rate_per_minute is not None else configured_rate
        return round(self.pending * 60 / rate, 1) if rate > 0 else None


# How long the edge trusts the number of replicas it last saw online (INFO replication).
REPLICAS_TTL_S = 5.0


class NotReplicated(Exception):
    """``accept.lua`` appended the changes on the primary, but fewer replicas than asked
    confirmed them within the timeout: a failover now could lose them."""

    def __init__(self, accepted: Accepted, wanted: int, confirmed: int, timeout_ms: int) -> None:
        super().__init__(
            f"{accepted.number} changes accepted on the primary, confirmed by {confirmed} of "
            f"{wanted} replicas within {timeout_ms} ms"
        )
        self.accepted = accepted
        self.timeout_ms = timeout_ms


def accept_call(
    keys: Keys,
    groups: Mapping[int, Sequence[str]],
    max_backlog: int,
    message_id: str | None = None,
    tenant: int = DEFAULT_TENANT,
) -> tuple[list[str], list[str | int]]:
    """``accept.lua``'s keys and arguments: ``groups`` maps audience id (all of ``tenant``) to
    entries of the form action code + profile id; with ``message_id`` (Amplitude's), only if
    the tenant has not seen it."""
    t = keys.tenant(tenant)
    script_keys = [
        keys.versions,
        t.active_list,
        t.active_set,
        keys.backlog_total,
        keys.tenants_due,
        *aggregate_keys(keys, tenant),
    ]
    args: list[str | int] = [max_backlog, tenant, len(groups)]
    for audience_id, entries in groups.items():
        script_keys += [keys.backlog(audience_id), keys.stats(audience_id)]
        args += [audience_id, len(entries), *entries]
    script_keys += [keys.tenant_rates, keys.config]
    if message_id is not None:
        script_keys.append(t.seen(message_id))
        args.append(SEEN_TTL_S)
    return script_keys, args


def aggregate_keys(keys: Keys, tenant: int) -> list[str]:
    """The keys ``lib/counts.lua`` keeps beside the counters of ``tenant``'s audiences, in the
    order its ``aggregates`` takes them."""
    t = keys.tenant(tenant)
    return [
        t.totals,
        t.audiences_pending,
        t.audiences_idle,
        keys.totals,
        keys.tenants_pending,
        keys.tenants_known,
        keys.audiences_pending,
    ]


def parse_accept(reply: Sequence[Any]) -> Accepted:
    outcome, number = _ACCEPT_OUTCOMES[int(reply[0])], int(reply[1])
    if len(reply) < 4:
        return Accepted(outcome, number)
    rate = reply[3]
    return Accepted(outcome, number, int(reply[2]), int(rate) if rate not in (b"", "") else None)


class Backlogs:
    """The backlog scripts of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._wanted_replicas = 0
        self._ack_timeout_ms = 0
        self._replicas = 0
        self._replicas_until = 0.0
        self._accept = redis.register_script(source("accept"))
        self._next_version = redis.register_script(source("next_version"))
        self._mark_cleared = redis.register_script(source("mark_cleared"))
        self._replay = redis.register_script(source("replay"))

    async def accept(
        self,
        groups: Mapping[int, Sequence[str]],
        max_backlog: int,
        message_id: str | None = None,
        *,
        tenant: int = DEFAULT_TENANT,
    ) -> Accepted:
        """Append changes to their audiences' backlogs, all or nothing (see ``accept_call``).

        With ``wait_for_replicas`` set, returns only once replicas hold the changes too, and
        raises ``NotReplicated`` when they did not confirm in time.
        """
        script_keys, args = accept_call(self._keys, groups, max_backlog, message_id, tenant)
        replicas = await self._replicas_to_wait_for()
        if not replicas:
            return parse_accept(await self._accept(keys=script_keys, args=args))
        reply, confirmed = await self._accept_and_wait(script_keys, args, replicas)
        accepted = parse_accept(reply)
        if accepted.outcome == "accepted" and confirmed < replicas:
            # Replicas may have gone meanwhile (a primary just promoted has none): what is asked
            # of a change is what is asked of the ones after it, at most the replicas online.
            self._replicas_until = 0.0
            if confirmed < await self._replicas_to_wait_for():
                raise NotReplicated(accepted, replicas, confirmed, self._ack_timeout_ms)
        return accepted

    def wait_for_replicas(self, replicas: int, timeout_ms: int) -> None:
        """Make ``accept`` wait until ``replicas`` replicas (at most those online) hold what it
        appended, for up to ``timeout_ms``; 0 replicas: never wait."""
        self._wanted_replicas = replicas
        self._ack_timeout_ms = timeout_ms
        self._replicas_until = 0.0

    async def _replicas_to_wait_for(self) -> int:
        if not self._wanted_replicas:
            return 0
        now = time.monotonic()
        if now >= self._replicas_until:
            self._replicas_until = now + REPLICAS_TTL_S  # one look for the requests arriving now
            info = await self._redis.info("replication")
            # A replica still loading its first copy confirms nothing: only those online count.
            online = sum(
                1
                for name, replica in info.items()
                if name.startswith("slave")
                and isinstance(replica, dict)
                and replica.get("state") == "online"
            )
            self._replicas = min(self._wanted_replicas, online)
        return self._replicas

    async def _accept_and_wait(
        self, script_keys: list[str], args: list[str | int], replicas: int
    ) -> tuple[Any, int]:
        # WAIT counts the writes made on its own connection: one pipeline keeps both on one.
        # A script's writes reach the replicas as one unit, so they hold all of it or none.
        for _ in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(
                    "EVALSHA", self._accept.sha, len(script_keys), *script_keys, *args
                )
                pipe.execute_command("WAIT", replicas, self._ack_timeout_ms)
                reply, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError):  # a new or restarted primary: load, run again
                await self._redis.script_load(self._accept.script)
                continue
            for result in (reply, confirmed):
                if isinstance(result, Exception):
                    raise result
            return reply, int(confirmed)
        raise NoScriptError("accept.lua could not be loaded")

    async def next_version(self, audience_id: int) -> int:
        """A version after every change of the audience accepted so far (for a clear)."""
        return int(await self._next_version(keys=[self._keys.versions], args=[audience_id]))

    async def mark_cleared(
        self,
        audience_id: int,
        version: int,
        *,
        deleted: bool = False,
        tenant: int = DEFAULT_TENANT,
    ) -> int:
        """Make the audience's changes older than ``version`` stale; returns how many backlog
        entries were dropped at once. A ``deleted`` audience with nothing left pending loses
        its keys."""
        k = self._keys
        dropped = await self._mark_cleared(
            keys=[
                k.cleared,
                k.backlog(audience_id),
                k.backlog_total,
                k.versions,
                k.stats(audience_id),
                *aggregate_keys(k, tenant),
            ],
            args=[audience_id, version, int(deleted), tenant],
        )
        return int(dropped)

    async def forget_tenant(self, tenant: int) -> bool:
        """After a tenant was removed: drop its keys (counters, rate limiter, turns, idle set,
        published rate) unless it still has work in Redis (changes its deleted audiences had
        queued, which the dispatcher drops); the fleet's totals keep what it counted. True when
        they went."""
        k = self._keys
        t = k.tenant(tenant)
        if await self._redis.zscore(k.tenants_pending, str(tenant)) is not None:
            return False
        # Its deleted audiences' ids wait in its round-robin until the dispatcher reaches them.
        active = await self._redis.lrange(t.active_list, 0, -1)  # type: ignore[misc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for audience in active:
                pipe.llen(k.backlog(audience.decode()))
            if any(await pipe.execute()):
                return False
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(t.totals, t.limiter, t.dispatch_credit, t.audiences_idle)
            pipe.delete(t.audiences_pending, t.active_list, t.active_set)
            pipe.srem(k.tenants_known, str(tenant))
            pipe.zrem(k.tenants_due, str(tenant))
            pipe.hdel(k.tenant_rates, str(tenant))
            await pipe.execute()
        return True

    async def replay(
        self, groups: Mapping[int, Sequence[tuple[bytes, str]]], tenant: int = DEFAULT_TENANT
    ) -> int:
        """Move dead letters back onto their audiences' backlogs: ``groups`` maps audience id
        (all of ``tenant``) to (letter as stored, its backlog entry) pairs. Returns the changes
        re-queued."""
        k = self._keys
        t = k.tenant(tenant)
        script_keys = [
            k.dead_letters,
            t.active_list,
            t.active_set,
            k.backlog_total,
            k.tenants_due,
            *aggregate_keys(k, tenant),
        ]
        args: list[str | int | bytes] = [tenant, len(groups)]
        for audience_id, entries in groups.items():
            script_keys += [k.backlog(audience_id), k.stats(audience_id)]
            args += [audience_id, len(entries)]
            for raw, entry in entries:
                args += [raw, entry]
        return int(await self._replay(keys=script_keys, args=args))
