"""Dead letters: counted once, shown in status, listed and replayed with their versions."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas.jobs import DeadLetter
from schemas.settings import Settings
from tests.support.admin import Admin
from tests.support.redis_keys import KEYS
from tests.support.worker import accept, clear, memberships, new_audience, stats
from worker.drain import run_until_drained


def unlimited(settings: Settings) -> Settings:
    return settings.with_changes(rate_limit_per_minute=0)


async def bury(
    redis: aioredis.Redis, audience: int, profile: str, member: bool, version: int
) -> None:
    """A dead letter as a worker leaves it, for a change that failed for a reason since fixed."""
    letter = DeadLetter(
        KEYS.job_id(audience, version), [audience, profile, member, version], "DataError: x", 1000
    )
    await redis.rpush(KEYS.dead_letters, msgspec.json.encode(letter))  # type: ignore[misc]
    await redis.hincrby(KEYS.stats(audience), "accepted", 1)  # type: ignore[misc]
    await redis.hincrby(KEYS.stats(audience), "dead", 1)  # type: ignore[misc]


async def test_a_permanent_failure_is_counted_once_and_shown(
    settings: Settings, db: Any, redis: aioredis.Redis, admin: Admin
) -> None:
    a = await new_audience(db)
    # Postgres text cannot hold NUL: this change fails the same way on every try.
    await accept(redis, a, [("add", "good"), ("add", "bad\x00id")])
    await run_until_drained(unlimited(settings), timeout_s=30)
    counted = await stats(redis, a)
    assert counted["accepted"] == 2
    assert (counted.get("applied", 0), counted.get("dropped", 0), counted["dead"]) == (1, 0, 1)

    shown = await admin("status", "--json")
    assert shown.code == 0, shown.err
    status = msgspec.json.decode(shown.out)
    assert status["deadLetters"] == 1
    assert [(x["pending"], x["deadLettered"]) for x in status["audiences"]] == [(0, 1)]

    listed = await admin("dead-letters")
    assert listed.code == 0, listed.err
    assert "1 dead letters" in listed.out
    assert (await admin("dead-letters", "list", "--audience", str(a + 1))).out.strip() == (
        "no dead letters"
    )
    assert "CharacterNotInRepertoire" in listed.out or "encoding" in listed.out


async def test_replay_requeues_with_original_versions(
    settings: Settings, db: Any, redis: aioredis.Redis, admin: Admin
) -> None:
    fresh = await new_audience(db, "fresh")
    overtaken = await new_audience(db, "overtaken")
    cleared = await new_audience(db, "cleared")
    other = await new_audience(db, "other")
    now_us = int(time.time() * 1_000_000)
    await bury(redis, fresh, "p1", True, now_us - 10)
    # A delete of p2 accepted after the add failed: replaying the add must not bring p2 back.
    await bury(redis, overtaken, "p2", True, now_us - 10)
    await accept(redis, overtaken, [("delete", "p2")])
    await bury(redis, cleared, "p3", True, now_us - 10)
    await clear(db, redis, cleared)
    await bury(redis, other, "p4", True, now_us - 10)
    await run_until_drained(unlimited(settings), timeout_s=30)

    replayed = await admin("dead-letters", "replay", "--audience", str(other))
    assert replayed.code == 0, replayed.err
    assert "re-queued 1 " in replayed.out
    assert await redis.llen(KEYS.dead_letters) == 3  # type: ignore[misc]
    replayed = await admin("dead-letters", "replay")
    assert "re-queued 3 " in replayed.out
    assert (await admin("dead-letters", "replay")).out.startswith("re-queued 0 ")
    await run_until_drained(unlimited(settings), timeout_s=30)

    assert await memberships(db, fresh) == {"p1": (True, now_us - 10)}
    assert {p: m for p, (m, _) in (await memberships(db, overtaken)).items()} == {"p2": False}
    assert await memberships(db, cleared) == {}
    assert await memberships(db, other) == {"p4": (True, now_us - 10)}
    assert await redis.llen(KEYS.dead_letters) == 0  # type: ignore[misc]
    for audience in (fresh, overtaken, cleared, other):
        counted = await stats(redis, audience)
        finished = counted.get("applied", 0) + counted.get("dropped", 0) + counted["dead"]
        assert (counted["dead"], finished) == (0, counted["accepted"]), (audience, counted)
    assert (await admin("dead-letters", "list")).out.strip() == "no dead letters"


async def test_a_job_arq_cannot_read_is_kept_and_counted_once(
    settings: Settings, db: Any, redis: aioredis.Redis
) -> None:
    a = await new_audience(db)
    job = KEYS.job_id(a, 17)
    await redis.hincrby(KEYS.stats(a), "accepted", 1)  # type: ignore[misc]
    await redis.set(KEYS.job(job), b"\xc1 not msgpack")
    await redis.zadd(KEYS.queue, {job: 1})
    await run_until_drained(unlimited(settings), timeout_s=30)
    assert (await stats(redis, a)).get("dead") == 1
    (raw,) = await redis.lrange(KEYS.dead_letters, 0, -1)  # type: ignore[misc]
    letter = msgspec.json.decode(raw, type=DeadLetter)
    assert (letter.job_id, letter.args) == (job, [])
