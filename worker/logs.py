"""The worker's event lines: start, stop, and one per finished job (schemas.logs formats them)."""

from __future__ import annotations

import logging
import os
from typing import Literal

log = logging.getLogger("cohortsync.worker")
job_log = logging.getLogger("cohortsync.job")

# applied: committed; stale: superseded by a newer change or a clear, or its audience is gone;
# dead_letter: failed permanently and kept in the dead letters.
Outcome = Literal["applied", "stale", "dead_letter"]


def job_finished(
    job_id: str, audience_id: int, outcome: Outcome, job_try: int, latency_s: float
) -> None:
    """One line per job that will not run again; ``latency_s`` is from acceptance at the edge."""
    if job_log.isEnabledFor(logging.INFO):
        job_log.info(
            "job %s %s",
            job_id,
            outcome,
            extra={
                "event": "job",
                "job_id": job_id,
                "audience_id": audience_id,
                "outcome": outcome,
                "job_try": job_try,
                "latency_s": round(latency_s, 3),
            },
        )


def lifecycle(event: Literal["start", "stopping", "stop"], replica: str, text: str) -> None:
    log.info(text, extra={"event": event, "replica": replica, "pid": os.getpid()})
