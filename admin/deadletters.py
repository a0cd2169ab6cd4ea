"""``cohortsync-admin dead-letters``: what failed for good, and putting it back in the queue."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from admin.connections import redis_client, scripts
from admin.output import PROG, clip, table, when
from core.scripts import Scripts
from schemas import keys
from schemas.jobs import Change, DeadLetter
from schemas.settings import Settings

# Letters read from Redis per round trip, and re-queued per script call.
CHUNK = 1000

_decode = msgspec.json.Decoder(DeadLetter).decode


class Letter(NamedTuple):
    raw: bytes
    letter: DeadLetter
    # None when the stored arguments are not a change (they can never be replayed).
    change: Change | None


class Summary(NamedTuple):
    letters: int
    reasons: Counter[str]
    per_audience: Counter[int]
    oldest_ms: int | None
    malformed: int


async def letters(scripts: Scripts) -> AsyncIterator[Letter]:
    """Every dead letter, oldest first, read in chunks."""
    start = 0
    dead_letters = scripts.keys.dead_letters
    while True:
        chunk: list[bytes] = await scripts.redis.lrange(dead_letters, start, start + CHUNK - 1)  # type: ignore[misc]
        for raw in chunk:
            try:
                letter = _decode(raw)
            except msgspec.DecodeError:
                letter = DeadLetter("?", [], "unreadable dead letter", 0)
            try:
                change: Change | None = msgspec.convert(letter.args, Change)
            except msgspec.ValidationError:
                change = None
            yield Letter(raw, letter, change)
        if len(chunk) < CHUNK:
            return
        start += CHUNK


async def summarize(scripts: Scripts, audience_id: int | None = None) -> Summary:
    """What the dead letters hold (of one audience, or all)."""
    reasons: Counter[str] = Counter()
    per_audience: Counter[int] = Counter()
    oldest: int | None = None
    count = malformed = 0
    async for found in letters(scripts):
        if audience_id is not None and (
            found.change is None or found.change.audience_id != audience_id
        ):
            continue
        count += 1
        reasons[found.letter.error] += 1
        if found.change is None:
            malformed += 1
        else:
            per_audience[found.change.audience_id] += 1
        if found.letter.failed_at_ms and (oldest is None or found.letter.failed_at_ms < oldest):
            oldest = found.letter.failed_at_ms
    return Summary(count, reasons, per_audience, oldest, malformed)


async def replay(scripts: Scripts, audience_id: int | None = None) -> tuple[int, int]:
    """Re-queue the dead letters (of one audience, or all) with their original versions;
    returns (changes re-queued, letters left because they hold no change)."""
    # Tenant -> audience -> (letter, entry): one script call replays one tenant's audiences.
    groups: dict[int, dict[int, list[tuple[bytes, str]]]] = {}
    pending = replayed = malformed = 0

    async def flush() -> int:
        nonlocal groups, pending
        done = 0
        for tenant, audiences in groups.items():
            done += await scripts.backlogs.replay(audiences, tenant)
        groups, pending = {}, 0
        return done

    # Read everything first: replaying removes letters, which would shift the pages being read.
    found_all = [found async for found in letters(scripts)]
    for found in found_all:
        change = found.change
        if change is None:
            malformed += 1
            continue
        if audience_id is not None and change.audience_id != audience_id:
            continue
        action: keys.Action = "add" if change.member else "delete"
        entry = keys.encode_entry(action, change.profile_id, change.version)
        audiences = groups.setdefault(change.tenant, {})
        audiences.setdefault(change.audience_id, []).append((found.raw, entry))
        pending += 1
        if pending >= CHUNK:
            replayed += await flush()
    replayed += await flush()
    return replayed, malformed


async def command(settings: Settings, args: argparse.Namespace) -> int:
    """``cohortsync-admin dead-letters [list|replay] [--audience ID]``."""
    client = redis_client(settings.redis_url)
    own = scripts(client, settings)
    try:
        if args.action == "replay":
            replayed, malformed = await replay(own, args.audience)
            scope = f" of audience {args.audience}" if args.audience is not None else ""
            print(
                f"re-queued {replayed:,} dead-lettered changes{scope} with their original "
                "versions (a newer change or a clear still wins)"
            )
            if malformed:
                print(f"left {malformed:,} letters that hold no change (see dead-letters list)")
            return 0
        found = await summarize(own, args.audience)
    finally:
        await client.aclose()
    if not found.letters:
        print("no dead letters")
        return 0
    oldest = when(datetime.fromtimestamp(found.oldest_ms / 1000, UTC)) if found.oldest_ms else "?"
    lines = [f"{found.letters:,} dead letters, the oldest failed at {oldest}", ""]
    reasons = [[f"{n:,}", clip(reason, 90)] for reason, n in found.reasons.most_common(20)]
    lines += [table(["changes", "reason"], reasons), ""]
    audiences = [[str(a), f"{n:,}"] for a, n in found.per_audience.most_common(20)]
    if audiences:
        lines.append(table(["audience", "changes"], audiences, numeric_from=1))
    if found.malformed:
        lines.append(f"{found.malformed:,} letters hold no change and cannot be replayed")
    lines.append(f"replay with: {PROG} dead-letters replay [--audience ID]")
    print("\n".join(lines))
    return 0
