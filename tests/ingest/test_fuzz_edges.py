"""Property-based tests of the edges between formats: backlog entries, accept.lua, the NUL check,
and any body at all sent to every endpoint that reads one, Amplitude's reference bodies mutated
among them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import msgspec
import pytest
import redis as syncredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import Response

from core.scripts.backlogs import accept_call
from ingest.bodies import has_nul
from schemas import keys, lua
from schemas.settings import Settings
from schemas.talon import BIGINT_MAX
from tests.ingest import reference_specs
from tests.ingest.fuzz_support import CDP_HEADERS, EXAMPLES, TIMEOUT_S, Edge, fuzzed_edge
from tests.support.redis_keys import KEYS

pytestmark = pytest.mark.timeout(TIMEOUT_S)

FUZZ = settings(
    max_examples=EXAMPLES * 10,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Versions are Redis time in µs, computed as Lua doubles: exact below 2^53 (the year 2255).
MAX_VERSION = 2**53 - 2**21

actions = st.sampled_from(["add", "delete"])
# Any text, colons (the entry's own separator) made common.
profile_ids = st.text(st.characters(codec="utf-8") | st.just(":"), min_size=1, max_size=200)


@given(action=actions, profile_id=profile_ids, version=st.integers(0, MAX_VERSION))
@FUZZ
def test_backlog_entry_round_trip(action: keys.Action, profile_id: str, version: int) -> None:
    entry = keys.encode_entry(action, profile_id, version)
    assert keys.decode_entry(entry) == (action, profile_id, version)


@pytest.fixture
def sync_redis(redis: Any, redis_url: str) -> Iterator[syncredis.Redis]:
    client = syncredis.Redis.from_url(redis_url)
    yield client
    client.close()


def _state(client: syncredis.Redis) -> dict[bytes, bytes | None]:
    return {k: cast(bytes | None, client.dump(k)) for k in cast(list[bytes], client.keys("*"))}


def _now_us(client: syncredis.Redis) -> int:
    seconds, micros = cast(tuple[int, int], client.time())
    return seconds * 1_000_000 + micros


groups_st = st.dictionaries(
    st.integers(1, BIGINT_MAX),
    st.lists(st.tuples(actions, profile_ids), min_size=1, max_size=30),
    max_size=4,
)


@given(
    groups=groups_st,
    last_versions=st.lists(st.integers(0, MAX_VERSION), max_size=4),
    queued=st.integers(0, 200),
    max_backlog=st.integers(0, 300),
    once=st.booleans(),
)
@FUZZ
def test_accept_lua_keeps_every_change_in_order(
    sync_redis: syncredis.Redis,
    groups: dict[int, list[tuple[keys.Action, str]]],
    last_versions: list[int],
    queued: int,
    max_backlog: int,
    once: bool,
) -> None:
    """Every accepted change is in its audience's backlog as sent, with versions after the
    last one handed out; a refusal changes nothing."""
    client = sync_redis
    client.flushdb()
    script = client.register_script(lua.source("accept"))
    for audience, last in zip(groups, last_versions, strict=False):
        client.hset(KEYS.versions, str(audience), str(last))
    client.set(KEYS.backlog_total, queued)
    message_id = "m" if once else None
    entries = {
        a: [keys.ACTION_CODE[act] + p for act, p in changes] for a, changes in groups.items()
    }
    incoming = sum(map(len, entries.values()))
    before, started_us = _state(client), _now_us(client)
    script_keys, args = accept_call(KEYS, entries, max_backlog, message_id)
    accepted, count = cast(list[int], script(keys=script_keys, args=args))[:2]
    if queued + incoming > max_backlog:
        assert (accepted, count) == (0, queued)
        assert _state(client) == before
        return
    assert (accepted, count) == (1, incoming)
    assert int(cast(bytes, client.get(KEYS.backlog_total))) == queued + incoming
    for audience, changes in groups.items():
        raw = cast(list[bytes], client.lrange(KEYS.backlog(audience), 0, -1))
        decoded = [keys.decode_entry(e.decode()) for e in raw]
        assert [(a, p) for a, p, _ in decoded] == changes
        versions = [v for _, _, v in decoded]
        last = dict(zip(groups, last_versions, strict=False)).get(audience, 0)
        assert versions[0] >= max(last + 1, started_us)
        assert versions == list(range(versions[0], versions[0] + len(changes)))
        assert int(cast(bytes, client.hget(KEYS.versions, str(audience)))) == versions[-1]
        stats = cast(bytes, client.hget(KEYS.stats(audience), "accepted"))
        assert int(stats) == len(changes)
    active = [int(a) for a in cast(list[bytes], client.lrange(KEYS.tenant(1).active_list, 0, -1))]
    assert sorted(active) == sorted(groups)
    if message_id is not None:
        # The same batch again: acknowledged as seen, nothing changes.
        after = _state(client)
        assert cast(list[int], script(keys=script_keys, args=args)) == [2, 0]
        assert _state(client) == after


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    return False


@given(value=json_values, ascii_only=st.booleans())
@example(value="\\u0000", ascii_only=False)
@example(value={"a\x00": 1}, ascii_only=True)
@example(value="\\\x00", ascii_only=False)
@FUZZ
def test_nul_check_matches_the_decoded_value(value: object, ascii_only: bool) -> None:
    """Both usual encoders: msgspec's (raw UTF-8) and Python's ``json`` (``\\uXXXX`` escapes)."""
    body = json.dumps(value).encode() if ascii_only else msgspec.json.encode(value)
    assert has_nul(body) == _holds_nul(value)


# --- any body to every endpoint that reads one -------------------------------------------------

BODY_ENDPOINTS = [
    ("POST", "/v2/audiences"),
    ("PUT", "/v2/audiences/1"),
    ("POST", "/v2/customer_audiences"),
    ("PUT", "/v2/audience_customers/1/attributes"),
    ("POST", "/cdp/audiences"),
    ("PUT", "/cdp/audiences/0"),
    ("PUT", "/cdp/customer_profiles/audiences"),
    ("PUT", "/cdp/v2/customer_profiles/audiences"),
    ("POST", "/amplitude/cohorts"),
]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", ""]
PATH = "/amplitude/cohorts"
AMPLITUDE_BODIES = [
    json.loads(path.read_text()) for path in sorted(reference_specs.AMPLITUDE.glob("*.json"))
]


@pytest.fixture
def edge(settings: Settings, key: str, redis: Any, redis_url: str) -> Iterator[Edge]:
    with fuzzed_edge(settings, key, redis_url) as found:
        yield found


def _send(edge: Edge, method: str, path: str, body: bytes, content_type: str) -> None:
    headers = {**CDP_HEADERS, "Content-Type": content_type}
    with edge.judged(f"{method} {path}") as answered:
        response = edge.session.request(method, edge.url + path, data=body, headers=headers)
        answered.append(Response.from_any(response))


@given(
    endpoint=st.sampled_from(BODY_ENDPOINTS),
    body=st.binary(max_size=300) | json_values.map(msgspec.json.encode),
    content_type=st.sampled_from(CONTENT_TYPES),
)
@FUZZ
def test_any_body_anywhere(
    edge: Edge, endpoint: tuple[str, str], body: bytes, content_type: str
) -> None:
    _send(edge, *endpoint, body, content_type)
    assert not edge.problems, edge.problems


@st.composite
def mutated_cohort(draw: st.DrawFn) -> dict[str, Any]:
    """One of Amplitude's reference bodies, a field replaced, dropped or added, users changed."""
    body: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(AMPLITUDE_BODIES))))
    body["message_id"] = draw(st.uuids()).hex  # a new batch, or nothing is enqueued
    name = draw(st.sampled_from([*body, "extra"]))
    change = draw(st.sampled_from(["replace", "drop", "users"]))
    if change == "replace":
        body[name] = draw(json_values)
    elif change == "drop":
        body.pop(name, None)
    else:
        users = st.fixed_dictionaries(
            {"user_id": json_values | profile_ids},
            optional={"user_properties": json_values},
        )
        body["users"] = draw(st.lists(users, max_size=20))
    return body


@given(body=mutated_cohort())
@FUZZ
def test_amplitude_reference_bodies_mutated(edge: Edge, body: dict[str, Any]) -> None:
    before = edge.queued()[0]
    with edge.judged(f"POST {PATH}") as answered:
        answered.append(Response.from_any(edge.session.post(f"{edge.url}{PATH}", json=body)))
    assert not edge.problems, edge.problems
    response = answered[0]
    if response.status_code == 200:
        result = response.json()
        # A message_id replaced by one an earlier example used is a repeat: nothing enqueued.
        distinct = 0 if result["duplicate"] else len({u["user_id"] for u in body["users"]})
        assert result["accepted"] == distinct == edge.queued()[0] - before
