"""The scripts that write backlogs: accept, next_version, mark_cleared (edge), replay (admin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from redis.asyncio import Redis

from schemas.keys import SEEN_TTL_S, Keys
from schemas.lua import source

AcceptOutcome = Literal["accepted", "full", "seen"]
# accept.lua's first reply value, by what it did.
_ACCEPT_OUTCOMES: dict[int, AcceptOutcome] = {1: "accepted", 0: "full", 2: "seen"}


class Accepted(NamedTuple):
    """What ``accept.lua`` did: ``accepted`` ``number`` changes, or nothing because the backlog
    is ``full`` (``number`` is then the backlog total) or the message was ``seen`` before."""

    outcome: AcceptOutcome
    number: int


def accept_call(
    keys: Keys,
    groups: Mapping[int, Sequence[str]],
    max_backlog: int,
    message_id: str | None = None,
) -> tuple[list[str], list[str | int]]:
    """``accept.lua``'s keys and arguments: ``groups`` maps audience id to entries of the form
    action code + profile id; with ``message_id`` (Amplitude's), only if it was not seen."""
    script_keys = [keys.versions, keys.active_list, keys.active_set, keys.backlog_total]
    args: list[str | int] = [max_backlog, len(groups)]
    for audience_id, entries in groups.items():
        script_keys += [keys.backlog(audience_id), keys.stats(audience_id)]
        args += [audience_id, len(entries), *entries]
    if message_id is not None:
        script_keys.append(keys.seen(message_id))
        args.append(SEEN_TTL_S)
    return script_keys, args


def parse_accept(reply: Sequence[Any]) -> Accepted:
    return Accepted(_ACCEPT_OUTCOMES[int(reply[0])], int(reply[1]))


class Backlogs:
    """The backlog scripts of one deployment on one Redis client."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._accept = redis.register_script(source("accept"))
        self._next_version = redis.register_script(source("next_version"))
        self._mark_cleared = redis.register_script(source("mark_cleared"))
        self._replay = redis.register_script(source("replay"))

    async def accept(
        self,
        groups: Mapping[int, Sequence[str]],
        max_backlog: int,
        message_id: str | None = None,
    ) -> Accepted:
        """Append changes to their audiences' backlogs, all or nothing (see ``accept_call``)."""
        script_keys, args = accept_call(self._keys, groups, max_backlog, message_id)
        return parse_accept(await self._accept(keys=script_keys, args=args))

    async def next_version(self, audience_id: int) -> int:
        """A version after every change of the audience accepted so far (for a clear)."""
        return int(await self._next_version(keys=[self._keys.versions], args=[audience_id]))

    async def mark_cleared(self, audience_id: int, version: int) -> int:
        """Make the audience's changes older than ``version`` stale; returns how many backlog
        entries were dropped at once."""
        k = self._keys
        dropped = await self._mark_cleared(
            keys=[
                k.cleared,
                k.backlog(audience_id),
                k.backlog_total,
                k.active_list,
                k.active_set,
                k.stats(audience_id),
            ],
            args=[audience_id, version],
        )
        return int(dropped)

    async def replay(self, groups: Mapping[int, Sequence[tuple[bytes, str]]]) -> int:
        """Move dead letters back onto their audiences' backlogs: ``groups`` maps audience id
        to (letter as stored, its backlog entry) pairs. Returns the changes re-queued."""
        k = self._keys
        script_keys = [k.dead_letters, k.active_list, k.active_set, k.backlog_total]
        args: list[str | int | bytes] = [len(groups)]
        for audience_id, entries in groups.items():
            script_keys += [k.backlog(audience_id), k.stats(audience_id)]
            args += [audience_id, len(entries)]
            for raw, entry in entries:
                args += [raw, entry]
        return int(await self._replay(keys=script_keys, args=args))
