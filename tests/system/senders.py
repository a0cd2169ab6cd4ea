"""Amplitude-like senders: cohort batches posted until answered 200, retried as Amplitude
retries them, and a ledger of what was acknowledged, in the order it was."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Amplitude waits 1-2 s; under faults the edge may be slower, and a late answer is just retried.
REQUEST_TIMEOUT_S = 10.0
RETRY_BACKOFF_S = (0.05, 1.0)


@dataclass(frozen=True)
class Message:
    """One Amplitude cohort webhook batch."""

    cohort_id: str
    in_cohort: bool
    message_id: str
    users: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return {
            "cohort_name": f"cohort {self.cohort_id}",
            "cohort_id": self.cohort_id,
            "in_cohort": self.in_cohort,
            "computed_time": "1764600000",
            "message_id": self.message_id,
            "users": [{"user_id": u} for u in self.users],
        }


def adds_and_deletes(
    seed: int, sender: int, *, cohorts: int, profiles: int, messages: int, batch: int
) -> list[Message]:
    """Batches entering and leaving over the same few profiles of one sender (its own, so the
    order one sender is acknowledged in decides each profile's end state)."""
    rng = random.Random(seed * 1000 + sender)
    own = [f"s{sender}-p{n}" for n in range(profiles)]
    return [
        Message(
            cohort_id=f"c{rng.randrange(cohorts)}",
            in_cohort=rng.random() < 0.6,
            message_id=f"m{seed}-{sender}-{n}",
            users=tuple(rng.sample(own, min(batch, profiles))),
        )
        for n in range(messages)
    ]


@dataclass
class Ledger:
    """What the senders were told: each acknowledged batch once, in the order acknowledged."""

    expected: dict[str, dict[str, bool]] = field(default_factory=dict)
    audiences: dict[str, int] = field(default_factory=dict)
    acknowledged_ids: set[str] = field(default_factory=set)
    sent_ids: set[str] = field(default_factory=set)
    # Batches the scenario itself sends twice (their second answer is meant to be a duplicate).
    repeated_ids: set[str] = field(default_factory=set)
    changes_sent: int = 0
    changes_acknowledged: int = 0
    deliveries: int = 0
    deliveries_failed: int = 0
    answers_5xx: int = 0
    # Retried batches answered ``duplicate``: their first delivery was accepted, its answer lost.
    answered_duplicate: int = 0
    # Batches still unanswered when their sender gave up.
    never_acknowledged: int = 0

    def sending(self, message: Message) -> None:
        if message.message_id not in self.sent_ids:
            self.sent_ids.add(message.message_id)
            self.changes_sent += len(message.users)

    def acknowledged(self, message: Message, audience_id: int) -> None:
        self.audiences[message.cohort_id] = audience_id
        if message.message_id in self.acknowledged_ids:
            return  # a second delivery: the first one counted, where it was acknowledged
        self.acknowledged_ids.add(message.message_id)
        self.changes_acknowledged += len(message.users)
        members = self.expected.setdefault(message.cohort_id, {})
        for user in message.users:
            members[user] = message.in_cohort


@dataclass(frozen=True)
class Edge:
    """Where the senders post: the edge's URL and an API key."""

    url: str
    key: str


async def deliver(
    http: aiohttp.ClientSession, edge: Edge, message: Message, ledger: Ledger, deadline: float
) -> bool:
    """POST the batch until it is answered 200, as Amplitude retries: on timeouts, connection
    errors, 429 and 5xx. Another answer is a bug in the test or the edge: raised."""
    ledger.sending(message)
    pause_s = RETRY_BACKOFF_S[0]
    while True:
        if time.monotonic() > deadline:
            ledger.never_acknowledged += 1
            return False
        ledger.deliveries += 1
        try:
            async with http.post(
                f"{edge.url}/amplitude/cohorts",
                json=message.body(),
                headers={"Authorization": f"ApiKey-v1 {edge.key}"},
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as response:
                if response.status == 200:
                    answer = await response.json()
                    ledger.acknowledged(message, int(answer["audienceId"]))
                    if answer["duplicate"] and message.message_id not in ledger.repeated_ids:
                        ledger.answered_duplicate += 1
                    return True
                if response.status >= 500:
                    ledger.answers_5xx += 1
                elif response.status != 429:
                    raise AssertionError(f"{response.status}: {await response.text()}")
        except (aiohttp.ClientError, TimeoutError):
            pass
        ledger.deliveries_failed += 1
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 2, RETRY_BACKOFF_S[1])


async def send_all(
    edge: Edge,
    streams: Sequence[Sequence[Message]],
    ledger: Ledger,
    *,
    timeout_s: float,
    pace_s: float = 0.0,
) -> None:
    """One sequential sender per stream, all at once; each waits for an answer before the next,
    and ``pace_s`` after it, so sending can span a fault."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:

        async def sender(stream: Sequence[Message]) -> None:
            for message in stream:
                if not await deliver(http, edge, message, ledger, deadline):
                    return  # what it would send next must not overtake this one
                await asyncio.sleep(pace_s)

        await asyncio.gather(*(sender(s) for s in streams))
