"""Every Redis client a process opens, from ``COHORTSYNC_REDIS_URL``: one server, or the primary
of a Sentinel master group (``schemas/redisurl.py``), followed through failovers."""

from __future__ import annotations

from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from schemas.redisurl import sentinel_address

R = TypeVar("R", bound=Redis)

# A sentinel that does not answer this fast is skipped for the next one: the primary's address
# must not wait on one sentinel that is down or partitioned away.
SENTINEL_TIMEOUT_S = 1.0


class _FollowingPool(SentinelConnectionPool):
    """redis-py's Sentinel pool, which asks the sentinels for the primary at every new connection
    (and drops connections to a primary that turned replica); closing the client closes its
    sentinel connections too."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client closes; a primary change passes False
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


def connect(url: str, *, redis_class: type[R] = Redis, **options: Any) -> R:  # type: ignore[assignment]
    """A client of ``redis_class`` on the primary ``url`` names; ``options`` are redis-py's
    connection options (timeouts, retries). Connections open on first use."""
    address = sentinel_address(url)
    if address is None:
        client: R = redis_class.from_url(url, **options)
        return client
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        address.sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "password": address.sentinel_password,
        },
        db=address.db,
        username=address.username,
        password=address.password,
        **options,
    )
    primary: R = sentinels.master_for(
        address.master_group, redis_class=redis_class, connection_pool_class=_FollowingPool
    )
    return primary
