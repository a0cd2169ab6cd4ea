"""COHORTSYNC_REDIS_URL: one server's URL as before, a Sentinel URL parsed, anything else refused
at start-up naming the variable."""

from __future__ import annotations

import pytest

from schemas.redisurl import SentinelAddress, describe, sentinel_address
from schemas.settings import Settings, SettingsError


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@host:6380/2", "unix:///run/redis.sock"]
)
def test_one_server_urls_are_left_to_redis_py(url: str) -> None:
    assert sentinel_address(url) is None
    assert Settings.from_env({"COHORTSYNC_REDIS_URL": url}).redis_url == url


def test_a_sentinel_url_names_the_sentinels_the_group_and_the_logins() -> None:
    url = "redis+sentinel://app:p%40ss@s1:26380,s2,[::1]:26381/my%20group/3?sentinel_password=x"
    assert sentinel_address(url) == SentinelAddress(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        master_group="my group",
        db=3,
        username="app",
        password="p@ss",
        sentinel_password="x",
    )
    plain = sentinel_address("redis+sentinel://s1/mymaster")
    assert plain == SentinelAddress((("s1", 26379),), "mymaster", 0, None, None, None)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://s1/mymaster", "unknown scheme http://"),
        ("s1:26379", "not a URL"),
        ("redis+sentinel://s1:26379", "name the master group"),
        ("redis+sentinel://s1:26379/", "name the master group"),
        ("redis+sentinel://s1/g/0/extra", "name the master group"),
        ("redis+sentinel://s1/g/zero", "db 'zero' is not a number"),
        ("redis+sentinel://s1:0/g", "port '0' is not a port number"),
        ("redis+sentinel://s1:x/g", "port 'x' is not a port number"),
        ("redis+sentinel://s1,,s2/g", "a sentinel without a host"),
        ("redis+sentinel://s1/g?password=x", "unknown parameter 'password'"),
    ],
)
def test_a_bad_url_stops_the_start_naming_the_variable(url: str, says: str) -> None:
    with pytest.raises(SettingsError, match="COHORTSYNC_REDIS_URL") as raised:
        Settings.from_env({"COHORTSYNC_REDIS_URL": url})
    assert says in str(raised.value)


def test_a_sentinel_url_is_described_without_its_passwords() -> None:
    described = describe("redis+sentinel://:secret@s1:26379,s2/mymaster/1?sentinel_password=x")
    assert described == "sentinel s1:26379,s2:26379/mymaster/1"
