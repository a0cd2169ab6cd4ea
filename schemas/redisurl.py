"""``COHORTSYNC_REDIS_URL``'s two forms: one Redis server, or a primary that Sentinel names.

``redis://``, ``rediss://`` and ``unix://`` URLs name one server (redis-py's own forms). A
Sentinel URL names the sentinels and the master group; the clients ask the sentinels for the
group's current primary and ask again whenever a connection to it fails, so they follow a
failover by themselves:

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master group>[/<db>]
        [?sentinel_password=...]

The user and password are the data servers' (primary and replicas); ``sentinel_password``
is the sentinels' own ``requirepass``, when they have one. A host without a port is on 26379.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SERVER_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_FORM = f"{SENTINEL_SCHEME}://[:password@]host:port[,host:port...]/<master group>[/<db>]"


class SentinelAddress(NamedTuple):
    """Where a Sentinel URL says the primary is found, and how to log in to it."""

    sentinels: tuple[tuple[str, int], ...]
    master_group: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None


def sentinel_address(url: str) -> SentinelAddress | None:
    """The Sentinel address ``url`` holds, or None when it names one server.

    Raises ``ValueError`` saying what is wrong with a URL of neither form.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: expected redis://host:port/db or {SENTINEL_FORM}")
    if scheme in SERVER_SCHEMES:
        return None
    if scheme != SENTINEL_SCHEME:
        known = ", ".join(f"{s}://" for s in (*SERVER_SCHEMES, SENTINEL_SCHEME))
        raise ValueError(f"unknown scheme {scheme}://; expected one of {known}")
    parts = urlsplit(f"sentinel://{rest}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels = tuple(_host_port(h) for h in hosts.split(","))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"name the master group, then optionally the db: {SENTINEL_FORM}")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ValueError(f"db {path[1]!r} is not a number: {SENTINEL_FORM}")
        db = int(path[1])
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}; only sentinel_password")
    sentinel_password = query.get("sentinel_password", [""])[-1] or None
    return SentinelAddress(sentinels, unquote(path[0]), db, username, password, sentinel_password)


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"a sentinel without a host in {text!r}: {SENTINEL_FORM}")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"sentinel {text!r}: port {port!r} is not a port number")
    return host, int(port)


def describe(url: str) -> str:
    """``host:port,host:port/group/db`` of a Sentinel URL: safe to print, never a password."""
    address = sentinel_address(url)
    if address is None:
        raise ValueError("not a Sentinel URL")
    hosts = ",".join(f"{h}:{p}" for h, p in address.sentinels)
    return f"sentinel {hosts}/{address.master_group}/{address.db}"
