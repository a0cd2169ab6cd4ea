"""GET /v1/status and cohortsync-admin status: the queue for people, with the same numbers."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from schemas.settings import Settings
from schemas.status import (
    AudienceCounts,
    QueueSnapshot,
    Totals,
    build_status,
    finish_time_s,
)
from tests.support.admin import Admin
from tests.support.edge import Client, auth, create_key
from tests.support.redis_keys import KEYS
from tests.support.status import post_changes, running_worker, wait_until
from tests.support.worker import new_audience
from worker.drain import is_drained


def finish_times_s(pending: dict[int, int], rate_per_minute: float) -> dict[int, float]:
    total = sum(pending.values())
    return {
        a: finish_time_s(n, total, pending.values(), rate_per_minute) for a, n in pending.items()
    }


def test_a_small_audience_behind_a_huge_backlog_finishes_in_seconds() -> None:
    # 1000/min shared by two: the 50 go at 500/min (6 s), then the rest at the full rate.
    times = finish_times_s({1: 50, 2: 1_000_000}, 1000)
    assert times == {1: pytest.approx(6.0), 2: pytest.approx(1_000_050 * 60 / 1000)}


def test_equal_backlogs_finish_together_and_done_ones_at_once() -> None:
    times = finish_times_s({1: 100, 2: 100, 3: 100, 4: 0}, 600)
    assert times == {1: pytest.approx(30.0), 2: pytest.approx(30.0), 3: pytest.approx(30.0), 4: 0}
    with pytest.raises(ValueError, match="rate"):
        finish_times_s({1: 1}, 0)


def test_water_filling_matches_a_simulation_of_equal_shares() -> None:
    # Step what the dispatcher does at 1 change/s: each audience with work gets 1 / going.
    pending = {1: 7, 2: 30, 3: 30, 4: 120, 5: 1}
    left = {a: float(n) for a, n in pending.items()}
    finished: dict[int, float] = {}
    clock, step = 0.0, 0.01
    while len(finished) < len(left):
        going = [a for a in left if a not in finished]
        for a in going:
            left[a] -= step / len(going)
            if left[a] <= 1e-9:
                finished[a] = clock + step
        clock += step
    times = finish_times_s(pending, 60)
    assert times == {a: pytest.approx(t, abs=0.05) for a, t in finished.items()}


def test_past_the_audiences_read_the_estimate_is_an_upper_bound() -> None:
    everyone = [500, 400, 300, 200, 100]
    exact = finish_time_s(100, sum(everyone), everyone, 60)
    # Only the busiest two were read: the others' excess over 100 is left out.
    bound = finish_time_s(100, sum(everyone), everyone[:2], 60)
    assert exact == 500.0
    assert bound == 500.0 + (300 - 100) + (200 - 100)


def test_without_a_limit_or_a_measured_rate_there_is_no_estimate() -> None:
    snapshot = QueueSnapshot(
        backlog=5,
        ready=0,
        in_flight=0,
        deferred=0,
        rate_in_force=0,
        workers_live=0,
        applied_last_minute=0,
        dead_letters=0,
        audiences=[AudienceCounts(1, 5, 5, 0, 0), AudienceCounts(2, 0, 3, 2, 1)],
        totals=Totals(accepted=8, applied=2, dropped=1, pending=5, audiences_with_work=1),
    )
    found = build_status(snapshot, {1: "busy", 2: "done"}, 1000)
    assert found.rate.configured_per_minute == 0
    assert [(a.id, a.pending, a.eta_seconds) for a in found.audiences] == [(1, 5, None), (2, 0, 0)]
    assert found.eta_seconds is None


@pytest.fixture
async def keys_by_scope(db: asyncpg.Pool) -> dict[str, str]:
    return {scope: (await create_key(db, scope=scope))[1] for scope in ("read", "cdp")} | {
        "all": (await create_key(db))[1]
    }


@pytest.fixture
def key(keys_by_scope: dict[str, str]) -> str:
    return keys_by_scope["all"]


async def get_status(client: Client, key: str | None = None) -> dict[str, Any]:
    response = await client.get("/v1/status", headers=auth(key) if key else None)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await response.json()
    return body


async def test_status_reports_depth_progress_and_eta(
    client: Client, db: asyncpg.Pool, keys_by_scope: dict[str, str]
) -> None:
    binge = await new_audience(db, "Binge watchers")
    weekend = await new_audience(db, "Weekend")
    idle = await new_audience(db, "Idle")
    gone = await new_audience(db, "Gone")
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", gone)
    await post_changes(client, [(binge, "add", f"p{i}") for i in range(40)])
    await post_changes(client, [(weekend, "add", f"p{i}") for i in range(10)])

    found = await get_status(client, keys_by_scope["read"])
    assert found["queueDepth"] == {"backlog": 50, "ready": 0, "inFlight": 0, "deferred": 0}
    assert found["rate"] == {"configuredPerMinute": 1000, "measuredPerMinute": 0}
    assert found["workersLive"] == 0
    assert found["deadLetters"] == 0
    # At 1000/min shared by two: Weekend's 10 take 1.2 s, Binge's other 30 then 1.8 s more.
    assert found["audiences"] == [
        {
            "id": binge,
            "name": "Binge watchers",
            "pending": 40,
            "applied": 0,
            "total": 40,
            "dropped": 0,
            "deadLettered": 0,
            "etaSeconds": 3.0,
        },
        {
            "id": weekend,
            "name": "Weekend",
            "pending": 10,
            "applied": 0,
            "total": 10,
            "dropped": 0,
            "deadLettered": 0,
            "etaSeconds": 1.2,
        },
        {
            "id": idle,
            "name": "Idle",
            "pending": 0,
            "applied": 0,
            "total": 0,
            "dropped": 0,
            "deadLettered": 0,
            "etaSeconds": 0.0,
        },
    ]
    assert found["etaSeconds"] == 3.0


async def test_cleared_changes_count_as_dropped(client: Client, db: asyncpg.Pool) -> None:
    audience = await new_audience(db, "Cleared")
    await post_changes(client, [(audience, "add", f"p{i}") for i in range(12)])
    cleared = await client.delete(f"/v2/audiences/{audience}/memberships")
    assert cleared.status == 204, await cleared.text()

    found = await get_status(client)
    assert found["audiences"] == [
        {
            "id": audience,
            "name": "Cleared",
            "pending": 0,
            "applied": 0,
            "total": 12,
            "dropped": 12,
            "deadLettered": 0,
            "etaSeconds": 0.0,
        }
    ]
    assert found["queueDepth"]["backlog"] == 0


async def test_measured_rate_and_live_workers_after_a_drain(
    client: Client, settings: Settings, db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    audience = await new_audience(db, "Drained")
    await post_changes(client, [(audience, "add", f"p{i}") for i in range(30)])
    # No limit: estimates use the rate measured over the last minute.
    await redis.hset(KEYS.config, "rate_per_minute", "0")  # type: ignore[misc]
    async with running_worker(settings, redis):
        await wait_until(lambda: is_drained(redis, KEYS), "the queue to drain")

        async def measured() -> bool:
            # A second counts once it is over.
            rate: dict[str, int] = (await get_status(client))["rate"]
            return rate["measuredPerMinute"] == 30

        await wait_until(measured, "30 changes measured")
        live = await get_status(client)
        assert live["workersLive"] == 1
        assert live["rate"]["configuredPerMinute"] == 0
        assert live["audiences"][0]["applied"] == 30
        assert live["audiences"][0]["pending"] == 0
        assert live["etaSeconds"] == 0.0
    await post_changes(client, [(audience, "add", f"n{i}") for i in range(15)])
    stopped = await get_status(client)
    assert stopped["workersLive"] == 0
    # 15 pending at the 30/min measured: 30 s.
    assert stopped["audiences"][0]["pending"] == 15
    assert stopped["audiences"][0]["etaSeconds"] == 30.0


async def test_only_keys_that_may_read(client: Client, keys_by_scope: dict[str, str]) -> None:
    assert (await client.get("/v1/status", headers={"Authorization": ""})).status == 401
    refused = await client.get("/v1/status", headers=auth(keys_by_scope["cdp"]))
    assert refused.status == 403
    await get_status(client, keys_by_scope["read"])
    await get_status(client, keys_by_scope["all"])


async def test_admin_status_prints_the_same_numbers(
    client: Client, admin: Admin, db: asyncpg.Pool
) -> None:
    big = await new_audience(db, "Big cohort")
    small = await new_audience(db, "Small cohort")
    await post_changes(client, [(big, "add", f"p{i}") for i in range(600)])
    await post_changes(client, [(small, "add", f"p{i}") for i in range(20)])

    # The client's key is the default tenant's: its view, as the admin shows a tenant's.
    as_json = await admin("status", "--tenant", "default", "--json")
    assert as_json.code == 0, as_json.err
    served = await get_status(client)
    assert msgspec.json.decode(as_json.out) == served

    table = await admin("status", "--tenant", "default")
    assert table.code == 0, table.err
    rows = {line.split()[0]: line.split() for line in table.out.splitlines() if line.strip()}
    # Small: 20 at 500/min = 2.4 s; Big: then 580 at 1000/min = 34.8 s more.
    assert rows[str(big)] == [str(big), "Big", "cohort", "600", "0", "600", "0", "0", "37", "s"]
    assert rows[str(small)] == [str(small), "Small", "cohort", "20", "0", "20", "0", "0", "2", "s"]
    assert "queue: backlog 620, ready 0, in flight 0, deferred 0" in table.out
    assert "rate: limit 1,000/min, applied in the last minute 0; workers alive: 0" in table.out
    assert "pending: 620 changes, all applied in 37 s" in table.out
    assert served["etaSeconds"] == pytest.approx(37.2)


async def test_the_rate_shown_is_the_one_the_workers_enforce(
    settings: Settings, admin: Admin, redis: aioredis.Redis
) -> None:
    # The worker runs at 30,000/min; whoever reads status has the default 1,000 in its
    # environment, and must still see 30,000 (it saw 1,000: an ETA 30 times too long).
    async with running_worker(settings.with_changes(rate_limit_per_minute=30_000), redis):
        table = await admin("status")
        assert table.code == 0, table.err
        assert "rate: limit 30,000/min" in table.out
        assert (await admin("set-rate", "6000")).code == 0
        as_json = msgspec.json.decode((await admin("status", "--json")).out)
        assert as_json["rate"]["configuredPerMinute"] == 6000


async def test_status_pages_busiest_first_then_the_idle_with_exact_totals(
    client: Client, db: asyncpg.Pool
) -> None:
    # 7 audiences with work (two of them tied) and 4 without; 1 deleted with work.
    pendings = [3, 7, 1, 5, 5, 2, 4]
    busy = [await new_audience(db, f"busy{i}") for i in range(len(pendings))]
    idle = [await new_audience(db, f"idle{i}") for i in range(4)]
    gone = await new_audience(db, "gone")
    changes = [(a, "add", f"p{j}") for a, n in zip(busy, pendings, strict=True) for j in range(n)]
    await post_changes(client, [*changes, (gone, "add", "x")])
    await db.execute("UPDATE audiences SET deleted_at = now() WHERE id = $1", gone)

    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = f"/v1/status?pageSize=3{f'&cursor={cursor}' if cursor else ''}"
        response = await client.get(query)
        assert response.status == 200, await response.text()
        pages.append(await response.json())
        cursor = pages[-1]["nextCursor"]
        if cursor is None:
            break
    seen = [(a["id"], a["pending"]) for page in pages for a in page["audiences"]]
    assert all(len(page["audiences"]) <= 3 for page in pages)
    # Every live audience once: those with work busiest first, then the idle by id.
    with_work = sorted(zip(busy, pendings, strict=True), key=lambda x: -x[1])
    assert [p for _, p in seen[: len(busy)]] == [p for _, p in with_work]
    assert {a for a, _ in seen[: len(busy)]} == set(busy)
    assert seen[len(busy) :] == [(a, 0) for a in idle]
    for page in pages:
        assert page["totals"] == {
            "accepted": sum(pendings) + 1,
            "applied": 0,
            "dropped": 0,
            "deadLettered": 0,
            "pending": sum(pendings) + 1,
            "audiencesWithWork": len(busy) + 1,
        }
        # The whole queue's ETA whatever the page: 28 changes at 1000/min.
        assert page["etaSeconds"] == 1.7
    # Water-filling: the audience with 4 waits for all of the smaller ones (1, 2, 3 and the
    # deleted one's 1) and 4 of its own and of each busier one's: 23 changes at 1000/min.
    etas = {a["pending"]: a["etaSeconds"] for page in pages for a in page["audiences"]}
    assert etas[4] == round((1 + 2 + 3 + 4 * 4 + 1) * 60 / 1000, 1)
    assert etas[7] == 1.7


async def test_status_page_size_and_cursor_are_checked(client: Client) -> None:
    for query in ("pageSize=0", "pageSize=1001", "pageSize=x", "cursor=nope", "cursor=d3gx"):
        response = await client.get(f"/v1/status?{query}")
        assert response.status == 400, query
        body = await response.json()
        parameter = query.split("=")[0]
        assert body["errors"][0]["source"] == {"parameter": parameter}, body
    assert (await client.get("/v1/status?pageSize=1000")).status == 200
