"""The job format on arq's queue: msgpack, never pickle, tolerant of fields it does not know."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from schemas.keys import DEFAULT_TENANT

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class Change(msgspec.Struct, array_like=True, frozen=True):
    """One membership change, the one argument of an ``apply_change`` job. An array on the wire
    (about half the bytes of a map); a decoder ignores trailing fields it does not know, so a
    field added at the end, with a default, lets old and new replicas share a queue."""

    audience_id: int
    profile_id: str
    member: bool
    version: int
    # The audience's tenant; a change queued before tenants existed is the default tenant's.
    tenant: int = DEFAULT_TENANT


class ChangeJob(msgspec.Struct, frozen=True):
    """arq's job dict (``arq.jobs.serialize_job``: try, function, args, enqueue time in ms) as
    ``dispatch.lua`` writes it (cmsgpack), for one change. arq's kwargs ``k`` are left out:
    none. ``tests/worker/test_dispatch.py`` decodes the script's jobs with it."""

    t: int
    f: str
    a: tuple[Change]
    et: int


class DeadLetter(msgspec.Struct, rename="camel", frozen=True):
    """A dead letter (JSON): the change's fields as queued, and why it failed."""

    job_id: str
    args: list[Any]
    error: str
    failed_at_ms: int


def serialize_job(job: dict[str, Any]) -> bytes:
    """arq ``job_serializer``: the job dict (``t f a k et``) as msgpack."""
    return _encoder.encode(job)


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """arq ``job_deserializer``: an argument that is a change comes back as a ``Change``
    (anything else as it was, for the job to report); jobs from ``dispatch.lua`` carry no ``k``."""
    job: dict[str, Any] = _decoder.decode(raw)
    args = job.get("a")
    if isinstance(args, list) and len(args) == 1:
        with contextlib.suppress(msgspec.ValidationError):
            args[0] = msgspec.convert(args[0], Change)
    kwargs = job.get("k")
    if not isinstance(kwargs, dict):
        job["k"] = {}
    job.setdefault("t", 1)
    job.setdefault("et", 0)
    return job
