"""``cohortsync-admin simulate``: play Amplitude's cohort sync against an edge, check the result.

A cohort of N users goes out as a first full sync, then as entry/exit diffs, in batches sent a
few at a time and retried with exponential back-off, the way Amplitude's cohort webhook does.
Then the audience is polled until it holds exactly the members the cohort has.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import aiohttp
import msgspec

from admin.progress import Progress, duration
from schemas.amplitude import MAX_USERS, CohortSync, CohortSyncResult, CohortUser
from schemas.settings import Settings
from schemas.talon import MemberPage

# Amplitude retries a failed batch up to 8 times, backing off exponentially.
MAX_RETRIES = 8
MAX_BACKOFF_S = 60.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
POLL_INTERVAL_S = 0.5
PAGE_SIZE = 1000
PLANS = ("free", "basic", "premium")


class SimulationError(Exception):
    """The edge refused a batch, stayed unreachable, or could not be read."""


class Options(msgspec.Struct, kw_only=True):
    url: str
    key: str
    users: int
    read_key: str | None = None
    batch: int = 1000
    parallel: int = 4
    diffs: int = 2
    diff_size: int | None = None
    cohort_id: str | None = None
    cohort_name: str | None = None
    rate_per_minute: int = 1000
    backoff_s: float = 1.0
    timeout_s: float = 2.0
    apply_timeout_s: float | None = None
    seed: int = 0


class Plan(msgspec.Struct, kw_only=True):
    """What will be sent, phase after phase, and the members the audience must end with."""

    cohort_id: str
    cohort_name: str
    phases: list[list[CohortSync]]
    expected: set[str]

    @property
    def changes(self) -> int:
        return sum(len(b.users) for phase in self.phases for b in phase)


def make_plan(options: Options) -> Plan:
    """A first full sync of ``users`` members, then ``diffs`` rounds in which ``diff_size``
    members leave and as many enter (half of them ones who left before, when there are)."""
    rng = random.Random(options.seed)
    cohort_id = options.cohort_id or f"sim-{uuid.uuid4().hex[:8]}"
    cohort_name = options.cohort_name or f"Simulated cohort {cohort_id}"
    run_id = uuid.uuid4().hex
    size = options.diff_size if options.diff_size is not None else max(1, options.users // 10)
    fresh = (f"viewer-{i:07d}" for i in range(10**7))
    members = [next(fresh) for _ in range(options.users)]
    current = set(members)
    left: list[str] = []

    def batches(phase: int, users: list[str], *, entered: bool) -> Iterator[CohortSync]:
        kind = "enter" if entered else "exit"
        for n, start in enumerate(range(0, len(users), options.batch)):
            chunk = users[start : start + options.batch]
            yield CohortSync(
                cohort_name=cohort_name,
                cohort_id=cohort_id,
                in_cohort=entered,
                computed_time=str(int(time.time())),
                message_id=f"{run_id}::{phase}::{kind}::{n}",
                users=[_user(u, rng, phase) if entered else CohortUser(u) for u in chunk],
            )

    phases = [list(batches(0, members, entered=True))]
    for phase in range(1, options.diffs + 1):
        exits = rng.sample(sorted(current), min(size, len(current)))
        back = rng.sample(left, min(size // 2, len(left)))
        enters = back + [next(fresh) for _ in range(size - len(back))]
        current.difference_update(exits)
        current.update(enters)
        returned = set(back)
        left = [u for u in left if u not in returned] + exits
        phases.append(
            [*batches(phase, enters, entered=True), *batches(phase, exits, entered=False)]
        )
    return Plan(cohort_id=cohort_id, cohort_name=cohort_name, phases=phases, expected=current)


def _user(user_id: str, rng: random.Random, phase: int) -> CohortUser:
    properties = {"plan": rng.choice(PLANS), "sim_phase": phase}
    return CohortUser(user_id, msgspec.Raw(msgspec.json.encode(properties)))


async def post_batch(
    session: aiohttp.ClientSession, url: str, body: bytes, options: Options
) -> CohortSyncResult:
    """POST one batch, retrying like Amplitude: up to ``MAX_RETRIES`` times on a timeout, a
    connection failure, 408, 429 or 5xx, waiting ``backoff_s * 2**attempt`` (or Retry-After)."""
    problem = ""
    for attempt in range(MAX_RETRIES + 1):
        wait_s = min(MAX_BACKOFF_S, options.backoff_s * 2**attempt)
        try:
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                text = await resp.read()
                if resp.status == 200:
                    return msgspec.json.decode(text, type=CohortSyncResult)
                problem = f"{resp.status} {text.decode(errors='replace')[:500]}"
                if resp.status not in RETRY_STATUSES:
                    raise SimulationError(f"the edge refused a batch: {problem}")
                retry_after = resp.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait_s = max(wait_s, float(retry_after))
        except (aiohttp.ClientError, TimeoutError) as e:
            problem = repr(e)
        if attempt < MAX_RETRIES:
            await asyncio.sleep(wait_s)
    raise SimulationError(f"a batch failed {MAX_RETRIES + 1} times; last: {problem}")


async def send(session: aiohttp.ClientSession, plan: Plan, options: Options, err: TextIO) -> int:
    """Send every phase, ``parallel`` batches at a time; returns the audience id."""
    url = options.url.rstrip("/") + "/amplitude/cohorts"
    progress = Progress("sending ", plan.changes, err)
    limit = asyncio.Semaphore(options.parallel)
    audience_ids: set[int] = set()
    sent = 0

    async def one(batch: CohortSync) -> None:
        nonlocal sent
        async with limit:
            result = await post_batch(session, url, msgspec.json.encode(batch), options)
        if result.audience_id is not None:
            audience_ids.add(result.audience_id)
        sent += len(batch.users)
        progress.update(sent)

    for phase in plan.phases:
        # Amplitude sends the next diff once the previous one was delivered.
        try:
            async with asyncio.TaskGroup() as group:
                for batch in phase:
                    group.create_task(one(batch))
        except ExceptionGroup as e:
            raise e.exceptions[0] from None
    progress.finish()
    if len(audience_ids) != 1:
        raise SimulationError(f"the edge named audiences {sorted(audience_ids)}, expected one")
    return audience_ids.pop()


async def _members_page(
    session: aiohttp.ClientSession,
    options: Options,
    audience_id: int,
    size: int,
    cursor: str | None = None,
) -> MemberPage:
    url = f"{options.url.rstrip('/')}/v1/audiences/{audience_id}/memberships"
    headers = {"Authorization": f"ApiKey-v1 {options.read_key or options.key}"}
    params = {"pageSize": str(size)} | ({"cursor": cursor} if cursor is not None else {})
    async with session.get(url, params=params, headers=headers) as resp:
        text = await resp.read()
        if resp.status != 200:
            hint = " (a cdp key may not read /v1/: pass --read-key)" if resp.status == 403 else ""
            raise SimulationError(
                f"reading the audience failed: {resp.status} {text.decode()[:500]}{hint}"
            )
    return msgspec.json.decode(text, type=MemberPage)


async def members(session: aiohttp.ClientSession, options: Options, audience_id: int) -> set[str]:
    """Every current member of the audience, page after page by the cursor (each page costs
    the same, wherever it is)."""
    found: set[str] = set()
    cursor = None
    while True:
        page = await _members_page(session, options, audience_id, PAGE_SIZE, cursor)
        found.update(m.profile_integration_id for m in page.data)
        if not page.has_more or page.cursor is None:
            return found
        cursor = page.cursor


async def await_members(
    session: aiohttp.ClientSession,
    plan: Plan,
    options: Options,
    audience_id: int,
    deadline: float,
    err: TextIO,
) -> set[str]:
    """Poll the member count until it is the expected one and the members are exactly the
    expected ones, or until ``deadline``; returns the members last seen."""
    progress = Progress("applying", len(plan.expected), err, unit="members")
    while True:
        page = await _members_page(session, options, audience_id, 1)
        progress.update(page.total_result_size)
        late = time.monotonic() >= deadline
        # A diff can leave the count unchanged while it applies: the count alone proves nothing.
        if page.total_result_size == len(plan.expected) or late:
            found = await members(session, options, audience_id)
            if found == plan.expected or late:
                progress.finish()
                return found
        await asyncio.sleep(POLL_INTERVAL_S)


def _differences(found: set[str], expected: set[str]) -> str:
    missing, extra = sorted(expected - found), sorted(found - expected)
    return (
        f"{len(missing)} expected members missing (e.g. {', '.join(missing[:3]) or '-'}), "
        f"{len(extra)} unexpected (e.g. {', '.join(extra[:3]) or '-'})"
    )


def eta_line(changes: int, rate_per_minute: int) -> str:
    """What the rate limit implies: 100,000 changes at 1000/min take 100 minutes."""
    if rate_per_minute <= 0:
        return f"{changes:,} changes, no rate limit: the workers apply them as fast as they can"
    eta = duration(changes * 60 / rate_per_minute)
    return f"{changes:,} changes at {rate_per_minute:,}/min: the workers need about {eta}"


async def simulate(options: Options, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> bool:
    """Run the simulation; True when the audience ends with exactly the cohort's members."""
    plan = make_plan(options)
    batches = sum(len(phase) for phase in plan.phases)
    print(
        f"cohort {plan.cohort_id!r}: {options.users:,} users, then {options.diffs} "
        f"{'diff' if options.diffs == 1 else 'diffs'}; "
        f"{plan.changes:,} changes in {batches} batches of up to {options.batch}, "
        f"{options.parallel} at a time",
        file=out,
    )
    print(eta_line(plan.changes, options.rate_per_minute), file=out, flush=True)
    eta_s = plan.changes * 60 / options.rate_per_minute if options.rate_per_minute else 0.0
    apply_timeout_s = options.apply_timeout_s
    if apply_timeout_s is None:
        apply_timeout_s = 2 * eta_s + 60
    timeout = aiohttp.ClientTimeout(total=options.timeout_s)
    headers = {"Authorization": f"ApiKey-v1 {options.key}"}
    connector = aiohttp.TCPConnector(limit=options.parallel + 1)
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        audience_id = await send(session, plan, options, err)
        deadline = time.monotonic() + apply_timeout_s
        found = await await_members(session, plan, options, audience_id, deadline, err)
    if found == plan.expected:
        print(f"audience {audience_id} holds exactly the {len(found):,} expected members", file=out)
        return True
    print(
        f"audience {audience_id} differs after {duration(apply_timeout_s)}: "
        f"{_differences(found, plan.expected)}",
        file=out,
    )
    return False


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not from {low} to {high or 'any'}")
        return value

    return parse


_positive = _whole(1)
_non_negative = _whole(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` subcommand's options."""
    add = parser.add_argument
    add("--url", required=True, help="the edge, e.g. http://127.0.0.1:8080")
    add("--key", required=True, help="API key for the webhook (scope all or cdp)")
    add("--read-key", help="API key for polling /v1/ (scope all or read); default: --key")
    add("--users", required=True, type=_positive, metavar="N", help="cohort size")
    add(
        "--batch",
        type=_whole(1, MAX_USERS),
        default=1000,
        metavar="N",
        help=f"users per request (1000; Amplitude sends up to {MAX_USERS:,})",
    )
    add("--parallel", type=_positive, default=4, metavar="N", help="requests at once (4)")
    add(
        "--diffs",
        type=_non_negative,
        default=2,
        metavar="K",
        help="entry/exit rounds after the sync (2)",
    )
    add(
        "--diff-size",
        type=_non_negative,
        metavar="N",
        help="users entering and leaving per diff (N/10)",
    )
    add("--cohort-id", help="Amplitude cohort id (default: a new sim-… id)")
    add("--cohort-name", help="cohort name (default: derived from the id)")
    add(
        "--rate-per-minute",
        type=_non_negative,
        default=1000,
        metavar="R",
        help="the deployment's rate limit, for the ETA (1000; 0 = none)",
    )
    add("--backoff-s", type=float, default=1.0, help="first retry delay, doubling (1.0)")
    add("--timeout-s", type=float, default=2.0, help="per request, like Amplitude (2.0)")
    add(
        "--apply-timeout-s", type=float, help="wait for the members (default: twice the ETA + 60 s)"
    )
    add("--seed", type=int, default=0, help="random seed of the diffs (0)")


async def command(settings: Settings, args: argparse.Namespace) -> int:
    """``cohortsync-admin simulate``: 0 when the audience ends exact, 1 otherwise."""
    fields: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in msgspec.structs.fields(Options)
        if getattr(args, f.name, None) is not None
    }
    options = Options(**fields)
    try:
        exact = await simulate(options, sys.stdout, sys.stderr)
    except (SimulationError, aiohttp.ClientError, TimeoutError) as e:
        print(f"cohortsync-admin simulate: {e}", file=sys.stderr)
        return 1
    return 0 if exact else 1
