"""Every Redis key cohortsync uses, and the backlog entry format, in one screen.

Redis holds only what is in flight; Postgres is the source of truth. Nothing here has a TTL unless
said so: a queued change must never age out, however long the backlog.
"""

from __future__ import annotations

from typing import Literal

PREFIX = "cs:"

# Per-audience backlog: a Redis list of entries, appended by the edge, popped by the dispatcher.
# An entry is ``<a|d><version>:<profileIntegrationId>``, e.g. ``a1764345600123456:R195412``:
# one byte of action, the decimal version, a colon, then the id (which may itself hold colons).
# About 35 bytes for a 15-character id, against ~200 for an arq job key.
BACKLOG_PREFIX = PREFIX + "backlog:"
# Audience ids with a non-empty backlog, in round-robin order (list), and the same ids as a set
# so the edge can tell in O(1) whether an audience is already scheduled.
ACTIVE_LIST = PREFIX + "active"
ACTIVE_SET = PREFIX + "active:set"
# Total entries across all backlogs: the edge refuses work (429) past COHORTSYNC_MAX_BACKLOG.
BACKLOG_TOTAL = PREFIX + "backlog:total"
# Hash audience id -> last version handed out. Versions are max(last + 1, Redis time in µs), so
# they stay monotonic per audience even when Redis loses this hash.
VERSIONS = PREFIX + "versions"
# Hash audience id -> version of the latest clear/delete; older changes are stale and dropped.
CLEARED = PREFIX + "cleared"
# Hash per audience with counters: accepted (edge), dispatched and dropped as stale (dispatcher),
# applied, dropped and dead (worker, in the step that finishes the job, once per job). Once
# drained, accepted = applied + dropped + dead.
STATS_PREFIX = PREFIX + "stats:"
# Hash of runtime configuration shared by all replicas: ``rate_per_minute`` and ``burst`` set by
# cohortsync-admin set-rate override the workers' own settings, which each replica publishes as
# ``workers_rate_per_minute`` / ``workers_burst`` so status shows the rate the workers enforce,
# not the one in the reader's environment.
CONFIG = PREFIX + "config"
CONFIG_RATE = "rate_per_minute"
CONFIG_BURST = "burst"
CONFIG_WORKERS_RATE = "workers_rate_per_minute"
CONFIG_WORKERS_BURST = "workers_burst"
# GCRA theoretical arrival time (µs, Redis clock) of the shared rate limiter; expires when idle.
LIMITER = PREFIX + "limiter"
# Changes that failed permanently (kept for an operator, never silently dropped): a list of JSON
# entries with the change, its job id and the reason; ``cohortsync-admin dead-letters replay``
# puts them back on their audience's backlog with their original versions.
DEAD_LETTERS = PREFIX + "dead"
# Leases on running jobs (sorted set): job id scored with the Redis time (ms) at which its lease
# lapses. The replica running a job renews it every few seconds; a lapsed lease makes the job
# claimable by any replica (worker/leases.py). arq's own in-progress keys are not used.
LEASES = PREFIX + "leases"
# An Amplitude webhook ``message_id`` already accepted, set by accept.lua together with the
# batch's changes so a retried batch is acknowledged and enqueues nothing. It expires: Amplitude
# retries a batch for minutes to hours (8 times with back-off), never for a week.
SEEN_PREFIX = PREFIX + "seen:amplitude:"
SEEN_TTL_S = 7 * 24 * 3600

# Worker replicas (sorted set): each one's health key, scored with the time (ms) after which it
# may be forgotten. Replicas refresh it with their health key, so readers count live replicas
# without a SCAN and drop the entries of replicas that died.
WORKERS = PREFIX + "workers"
# Changes applied during one second (a counter per second, written by the workers): the measured
# rate is the sum over the last minute. Each expires soon after that minute.
APPLIED_SECOND_PREFIX = PREFIX + "applied:"
APPLIED_SECOND_TTL_S = 120

# arq's own layout (arq.constants): job payloads live under this prefix, keyed by job id.
ARQ_JOB_PREFIX = "arq:job:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_RETRY_PREFIX = "arq:retry:"
ARQ_HEALTH_CHECK_SUFFIX = ":health-check"


def worker_health_key(queue_name: str, replica: str) -> str:
    """A worker replica's arq health key, ``<queue>:health-check:<host>:<pid>``, refreshed every
    few seconds and expiring when the replica stops. Its value is arq's status line, ending in
    ``j_ongoing=<jobs running in that replica> queued=<jobs on arq's queue>``."""
    return f"{queue_name}{ARQ_HEALTH_CHECK_SUFFIX}:{replica}"


# Name of the arq function that applies one change.
APPLY_FUNCTION = "apply_change"

Action = Literal["add", "delete"]
ACTION_CODE: dict[str, str] = {"add": "a", "delete": "d"}


def backlog_key(audience_id: int) -> str:
    return f"{BACKLOG_PREFIX}{audience_id}"


def stats_key(audience_id: int) -> str:
    return f"{STATS_PREFIX}{audience_id}"


def applied_second_key(second: int) -> str:
    """The counter of changes applied during the Unix second ``second``."""
    return f"{APPLIED_SECOND_PREFIX}{second}"


def seen_key(message_id: str) -> str:
    return f"{SEEN_PREFIX}{message_id}"


def job_id(audience_id: int, version: int) -> str:
    """One job per change: the id is unique because versions are unique per audience."""
    return f"cs:{audience_id}:{version}"


def parse_job_id(job: str) -> tuple[int, int]:
    """(audience id, version) of a ``job_id``; (0, 0) for an id of another shape."""
    _, audience, version = [*job.split(":"), "", ""][:3]
    try:
        return int(audience), int(version)
    except ValueError:
        return 0, 0


def encode_entry(action: Action, profile_id: str, version: int) -> str:
    return f"{ACTION_CODE[action]}{version}:{profile_id}"


def decode_entry(entry: str) -> tuple[Action, str, int]:
    """Split a backlog entry into (action, profile id, version)."""
    version, _, profile_id = entry[1:].partition(":")
    action: Action = "add" if entry[0] == "a" else "delete"
    return action, profile_id, int(version)
