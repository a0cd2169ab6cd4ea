"""The job format on arq's queue: msgpack, never pickle, tolerant of fields it does not know."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class Change(msgspec.Struct, array_like=True, frozen=True):
    """One membership change as an arq job's positional arguments (see ``lua/dispatch.lua``)."""

    audience_id: int
    profile_id: str
    member: bool
    version: int


class DeadLetter(msgspec.Struct, rename="camel", frozen=True):
    """An entry of ``cs:dead`` (JSON): the job's arguments as queued, and why they failed."""

    job_id: str
    args: list[Any]
    error: str
    failed_at_ms: int


def serialize_job(job: dict[str, Any]) -> bytes:
    """arq ``job_serializer``: the job dict (``t f a k et``) as msgpack."""
    return _encoder.encode(job)


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """arq ``job_deserializer``; jobs written by the dispatch script carry no ``k``."""
    job: dict[str, Any] = _decoder.decode(raw)
    kwargs = job.get("k")
    if not isinstance(kwargs, dict):
        job["k"] = {}
    job.setdefault("t", 1)
    job.setdefault("et", 0)
    return job
