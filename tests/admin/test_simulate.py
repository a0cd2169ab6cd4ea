"""``cohortsync-admin simulate`` against a live edge and worker: it ends with exact membership."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from admin.progress import Progress
from admin.simulate import (
    MAX_RETRIES,
    Options,
    SimulationError,
    eta_line,
    make_plan,
    post_batch,
    simulate,
)
from schemas.settings import Settings
from tests.support.admin import Admin
from tests.support.edge import Client, auth, create_key
from worker.drain import run_until_drained


@pytest.fixture
async def workers(settings: Settings, client: Client) -> AsyncIterator[None]:
    """Workers applying whatever arrives, without a rate limit, until the test ends."""
    stop = asyncio.Event()

    async def drain() -> None:
        while not stop.is_set():
            await run_until_drained(settings.with_changes(rate_limit_per_minute=0))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(drain())
    yield
    stop.set()
    await task


def url(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


def test_plan_sends_a_full_sync_then_diffs() -> None:
    options = Options(url="", key="", users=50, batch=7, diffs=3, diff_size=10, seed=3)
    plan = make_plan(options)
    assert len(plan.phases) == 4
    batches = [b for phase in plan.phases for b in phase]
    assert all(1 <= len(b.users) <= 7 for b in batches)
    assert len({b.message_id for b in batches}) == len(batches)
    assert {b.cohort_id for b in batches} == {plan.cohort_id}
    assert plan.changes == 50 + 3 * 20
    members: set[str] = set()
    ever_left: set[str] = set()
    for phase in plan.phases:
        enters = {u.user_id for b in phase if b.in_cohort for u in b.users}
        exits = {u.user_id for b in phase if not b.in_cohort for u in b.users}
        assert not enters & exits
        assert not enters & members
        assert exits <= members
        members = (members - exits) | enters
        ever_left |= exits
    assert members == plan.expected
    assert len(plan.expected) == 50
    # Some who left come back, as in a real cohort.
    assert ever_left & plan.expected


def test_eta_follows_the_rate_limit() -> None:
    assert eta_line(100_000, 1000) == (
        "100,000 changes at 1,000/min: the workers need about 100 minutes"
    )
    assert eta_line(30, 1000) == "30 changes at 1,000/min: the workers need about 2 s"
    assert eta_line(500_000, 1000).endswith("about 8 h 20 min")
    assert "no rate limit" in eta_line(10, 0)


async def test_simulation_ends_with_exact_membership(
    client: Client, workers: None, db: asyncpg.Pool, key: str
) -> None:
    options = Options(
        url=url(client),
        key=key,
        users=60,
        batch=7,
        parallel=4,
        diffs=3,
        diff_size=10,
        cohort_id="sim-test",
        rate_per_minute=0,
        backoff_s=0.01,
        apply_timeout_s=60,
    )
    out, err = io.StringIO(), io.StringIO()
    assert await simulate(options, out, err), out.getvalue()
    assert out.getvalue().splitlines()[-1] == "audience 1 holds exactly the 60 expected members"
    # Not a terminal: plain progress lines, sending first, then applying, each reaching 100 %.
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("sending  [")
    sending = [line for line in lines if line.startswith("sending ")]
    applying = [line for line in lines if line.startswith("applying ")]
    assert lines == sending + applying
    assert "100% 120/120 users" in sending[-1]
    assert "100% 60/60 members" in applying[-1]
    assert "\r" not in err.getvalue()

    stored = await db.fetchval(
        """SELECT count(*) FROM memberships m JOIN audiences a ON a.id = m.audience_id
           WHERE a.integration = 'amplitude' AND a.integration_id = 'sim-test' AND m.member"""
    )
    assert stored == 60
    # Everyone who ever entered has properties: 60, then 10 new users in the first diff and
    # 5 in each later one (5 who had left come back).
    assert await db.fetchval("SELECT count(*) FROM profile_attributes") == 60 + 10 + 5 + 5


async def test_command_exits_0_when_exact(
    client: Client, workers: None, key: str, admin: Admin
) -> None:
    run = await admin(
        "simulate",
        f"--url={url(client)}",
        f"--key={key}",
        "--users=20",
        "--batch=5",
        "--diffs=1",
        "--backoff-s=0.01",
    )
    assert run.code == 0, run.out + run.err
    first, *rest = run.out.splitlines()
    assert first.startswith("cohort 'sim-")
    assert first.endswith(
        ": 20 users, then 1 diff; 24 changes in 6 batches of up to 5, 4 at a time"
    )
    assert rest == [
        "24 changes at 1,000/min: the workers need about 1 s",
        "audience 1 holds exactly the 20 expected members",
    ]
    assert "sending " in run.err
    assert "applying " in run.err


async def test_command_exits_1_when_the_audience_differs(
    client: Client, workers: None, key: str, admin: Admin
) -> None:
    intruder = {
        "cohort_name": "c",
        "cohort_id": "fixed",
        "in_cohort": True,
        "message_id": "before",
        "users": [{"user_id": "intruder"}],
    }
    # A member the simulated cohort does not have.
    assert (await client.post("/amplitude/cohorts", json=intruder)).status == 200
    run = await admin(
        "simulate",
        f"--url={url(client)}",
        f"--key={key}",
        "--users=5",
        "--diffs=0",
        "--cohort-id=fixed",
        "--apply-timeout-s=2",
    )
    assert run.code == 1, run.out + run.err
    assert run.out.splitlines()[-1] == (
        "audience 1 differs after 2 s: 0 expected members missing (e.g. -), "
        "1 unexpected (e.g. intruder)"
    )


async def test_read_key_is_needed_for_a_cdp_key(
    client: Client, db: asyncpg.Pool, admin: Admin
) -> None:
    _, cdp_key = await create_key(db, scope="cdp")
    run = await admin(
        "simulate",
        f"--url={url(client)}",
        f"--key={cdp_key}",
        "--users=3",
        "--diffs=0",
    )
    assert run.code == 1
    assert "pass --read-key" in run.err
    assert "Traceback" not in run.err
    _, reader = await create_key(db, scope="read")
    resp = await client.get("/v1/audiences", headers=auth(reader))
    assert (await resp.json())["data"][0]["membersCount"] == 0


class Flaky:
    """An endpoint that fails ``failures`` times with ``status``, then answers like the edge."""

    def __init__(self, failures: int, status: int) -> None:
        self.failures = failures
        self.status = status
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.failures:
            return web.Response(status=self.status, text="nope", headers={"Retry-After": "0"})
        return web.json_response({"audienceId": 7, "accepted": 1, "duplicate": False})


async def _post_to(flaky: Flaky) -> tuple[int | None, int]:
    app = web.Application()
    app.router.add_post("/amplitude/cohorts", flaky.handle)
    options = Options(url="", key="", users=1, backoff_s=0.001)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        target = str(server.make_url("/amplitude/cohorts"))
        result = await post_batch(session, target, b"{}", options)
    return result.audience_id, flaky.calls


async def test_retries_with_back_off_until_answered() -> None:
    assert await _post_to(Flaky(failures=MAX_RETRIES, status=503)) == (7, MAX_RETRIES + 1)
    assert await _post_to(Flaky(failures=2, status=429)) == (7, 3)


async def test_gives_up_after_8_retries_or_at_once_on_a_refusal() -> None:
    always = Flaky(failures=100, status=500)
    with pytest.raises(SimulationError, match="failed 9 times; last: 500 nope"):
        await _post_to(always)
    assert always.calls == 9
    refused = Flaky(failures=100, status=400)
    with pytest.raises(SimulationError, match="the edge refused a batch: 400 nope"):
        await _post_to(refused)
    assert refused.calls == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_in_place_on_a_terminal() -> None:
    stream = Terminal()
    progress = Progress("sending ", 10, stream)
    for done in range(1, 11):
        progress.update(done)
    progress.finish()
    text = stream.getvalue()
    assert text.startswith("\rsending  [###...")
    assert text.count("\n") == 1
    assert text.endswith("\rsending  [" + "#" * 30 + "] 100% 10/10 users in 0 s\n")
