"""core.errors: one list of what a failing dependency looks like, which the worker retries and
the edge answers 503 for; failures of the work itself are neither (worker.errors.is_retried
adds asyncpg's InterfaceError for jobs only)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import pytest
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from core.errors import is_transient
from ingest.errors import error_middleware
from worker.errors import is_retried

REFUSING_REDIS = "redis://127.0.0.1:1/0"

TRANSIENT = [
    # What the edge answered 503 for before the lists were one: it still does.
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    socket.gaierror(-2, "Name or service not known"),
    redis_errors.ConnectionError("Error 111 connecting to redis:6379"),
    redis_errors.TimeoutError("Timeout reading from socket"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    # What the worker retried before: it still does, and the edge now answers 503 for them too.
    OSError(24, "Too many open files"),
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.DiskFullError("could not extend file"),
    asyncpg.exceptions.LockNotAvailableError("could not obtain lock"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only txn"),
    redis_errors.ReadOnlyError("You can't write against a read only replica."),
    redis_errors.TryAgainError("Multiple keys request during rehashing of slot"),  # type: ignore[no-untyped-call]
]

# The client used after its connection or pool closed: a job runs again (its replica may be
# stopping); the edge answers 500, as it did before (tests/ingest/test_request_logs.py closes
# its pool).
CLIENT_CLOSED = [
    asyncpg.InterfaceError("pool is closed"),
    asyncpg.InterfaceError("connection is closed"),
]

PERMANENT = [
    ValueError("bad value"),
    KeyError("missing"),
    asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
    asyncpg.DataError("invalid input syntax for type integer"),
    asyncpg.UndefinedTableError('relation "memberships" does not exist'),
    redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong value"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_a_failing_dependency_is_transient_and_retried(error: BaseException) -> None:
    assert is_transient(error)
    assert is_retried(error)


@pytest.mark.parametrize("error", CLIENT_CLOSED, ids=str)
def test_a_closed_client_is_retried_by_a_job_only(error: BaseException) -> None:
    assert not is_transient(error)
    assert is_retried(error)


@pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__)
def test_a_failure_of_the_work_itself_is_neither(error: BaseException) -> None:
    assert not is_transient(error)
    assert not is_retried(error)


async def test_what_redis_and_postgres_raise_when_down_is_retried(database_url: str) -> None:
    client = aioredis.Redis.from_url(REFUSING_REDIS)
    with pytest.raises(redis_errors.ConnectionError) as refused:
        await client.ping()
    await client.aclose()
    assert is_transient(refused.value)
    with pytest.raises(ConnectionRefusedError) as unreachable:
        await asyncpg.connect("postgresql://nobody@127.0.0.1:1/none", timeout=5)
    assert is_transient(unreachable.value)

    conn = await asyncpg.connect(database_url)
    killer = await asyncpg.connect(database_url)
    try:
        await killer.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # What the client raises depends on where it was when the server hung up (seen:
        # ConnectionDoesNotExistError, AdminShutdownError, InterfaceError, InternalClientError).
        ended = await _error_of(conn.fetchval("SELECT 1"))
        assert is_retried(ended), repr(ended)
    finally:
        conn.terminate()
        await killer.close()


async def _error_of(call: Awaitable[object]) -> Exception:
    try:
        await call
    except Exception as e:
        return e
    raise AssertionError("no error")


async def test_what_bad_data_raises_is_not_transient(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE once (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO once VALUES (1)")
        with pytest.raises(asyncpg.UniqueViolationError) as duplicate:
            await conn.execute("INSERT INTO once VALUES (1)")
        assert not is_transient(duplicate.value)
        with pytest.raises(asyncpg.DataError) as server_side:
            await conn.fetchval("SELECT 'x'::int")
        assert not is_transient(server_side.value)
        # An argument asyncpg cannot encode fails before it reaches Postgres, every time.
        with pytest.raises(asyncpg.DataError) as unencodable:
            await conn.fetchval("SELECT $1::int4", 2**40)
        assert not is_transient(unencodable.value)
        await conn.execute("DROP TABLE once")


ANSWERS = {"transient": TRANSIENT, "closed": CLIENT_CLOSED, "permanent": PERMANENT}


@pytest.fixture
async def raising() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An app behind the edge's error middleware whose one route raises ``ANSWERS[kind][i]``."""

    async def fail(request: web.Request) -> web.Response:
        raise ANSWERS[request.match_info["kind"]][int(request.match_info["index"])]

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/{kind}/{index}", fail)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_the_edge_answers_503_for_each_transient_error_and_500_otherwise(
    raising: TestClient[web.Request, web.Application],
) -> None:
    for i, error in enumerate(TRANSIENT):
        response = await raising.get(f"/transient/{i}")
        assert (response.status, response.headers.get("Retry-After")) == (503, "1"), error
    for kind in ("closed", "permanent"):
        for i, error in enumerate(ANSWERS[kind]):
            assert (await raising.get(f"/{kind}/{i}")).status == 500, error
