"""What every fuzzed request must satisfy, whoever generated it: never a 5xx, every rejection in
its surface's error shape, and nothing enqueued by a rejected request."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import msgspec
import redis as syncredis
import requests
from schemathesis import Response

from schemas.cdp import CdpErrorBody
from schemas.settings import Settings
from schemas.talon import ErrorBody
from tests.ingest.threaded_edge import threaded_edge
from tests.support.edge import auth
from tests.support.redis_keys import KEYS

# Examples per operation and generation mode in `make test`; a longer run raises it.
EXAMPLES = int(os.environ.get("COHORTSYNC_FUZZ_EXAMPLES", "12"))
# pytest-timeout's bound for one fuzz test, growing with the examples asked for.
TIMEOUT_S = max(120, EXAMPLES * 12)
PLATFORM = "fuzzcdp"
CDP_HEADERS = {"destination-hostname": "fuzz.talon.one", "customer-data-platform-name": PLATFORM}

_talon_error = msgspec.json.Decoder(ErrorBody)
_cdp_error = msgspec.json.Decoder(CdpErrorBody)


@dataclass
class Edge:
    url: str
    session: requests.Session
    redis: syncredis.Redis
    auth: dict[str, str]
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def queued(self) -> tuple[int, int]:
        """(backlog total, keys in Redis): a refused request changes neither."""
        total = cast(bytes | None, self.redis.get(KEYS.backlog_total))
        return int(total or 0), cast(int, self.redis.dbsize())

    @contextmanager
    def judged(self, label: str) -> Iterator[list[Response]]:
        """Judge the response a block appends: its status counted, a 5xx, a rejection not in
        its surface's shape or a rejection that enqueued something noted in ``problems``."""
        before = self.queued()
        answered: list[Response] = []
        yield answered
        for response in answered:
            self.statuses[response.status_code] += 1
            problem = judge(response, before, self.queued())
            if problem:
                self.problems.append(f"{label}: {problem}")


# Talon.One ids a fuzzer picks first (hypothesis favours small integers), and the CDP's own.
SEEDED_AUDIENCES = 3


@contextmanager
def fuzzed_edge(settings: Settings, key: str, redis_url: str) -> Iterator[Edge]:
    """The edge on a real port, a session sending ``key``, and a few live audiences."""
    with threaded_edge(settings) as url, requests.Session() as session:
        session.headers.update(auth(key))
        for n in range(SEEDED_AUDIENCES):
            created = session.post(f"{url}/v2/audiences", json={"name": f"seed {n}"})
            assert created.status_code == 201
            created = session.post(
                f"{url}/cdp/audiences",
                json={"audienceId": str(n), "audienceName": f"cdp seed {n}"},
                headers=CDP_HEADERS,
            )
            assert created.status_code == 201
        client = syncredis.Redis.from_url(redis_url)
        try:
            yield Edge(url, session, client, auth(key))
        finally:
            client.close()


def judge(response: Response, before: tuple[int, int], after: tuple[int, int]) -> str:
    """What is wrong with ``response``, or ``""``."""
    status = response.status_code
    path = response.request.path_url
    where = f"{response.request.method} {path[:120]} -> {status}"
    if status >= 500:
        return f"{where}: server error {response.text[:300]}"
    if status < 400:
        return ""
    decoder = _cdp_error if path.startswith("/cdp/") else _talon_error
    try:
        body = decoder.decode(response.content)
    except msgspec.DecodeError as e:
        return f"{where}: error body not in the contract's shape ({e}): {response.text[:300]}"
    if body.status_code != status:
        return f"{where}: StatusCode {body.status_code} in the body"
    if after != before:
        return f"{where}: refused, yet Redis changed from {before} to {after}"
    return ""
