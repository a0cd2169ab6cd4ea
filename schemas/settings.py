"""Process settings, read once from ``COHORTSYNC_*`` variables into one frozen object."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from msgspec import Meta

PREFIX = "COHORTSYNC_"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class SettingsError(ValueError):
    """A ``COHORTSYNC_*`` variable holds a value the process cannot start with."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a cohortsync process can be configured with; field ``x`` is ``COHORTSYNC_X``."""

    database_url: str = "postgresql://127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_host: str = "0.0.0.0"
    http_port: Port = 8080
    # /metrics and /dashboard on their own port (with the probes and /v1/status, which the
    # dashboard reads), so the public listener serves only the APIs; 0 serves them on http_port.
    ops_port: Port = 0
    # A request (headers and body) must arrive whole this long after its first byte, else its
    # connection is closed: a body that never ends must not hold a connection for good.
    request_read_timeout_s: PositiveFloat = 30.0
    # An idle keep-alive connection is closed after this long; above the 60 s idle timeout of
    # common load balancers, so they close first and never send on a connection we closed.
    keepalive_timeout_s: PositiveFloat = 75.0
    # Open connections per edge listener; one more is answered 503 and closed.
    max_connections: Positive = 1000
    # Applied membership changes per minute, summed over all worker replicas. 0 lifts the limit.
    rate_limit_per_minute: NonNegative = 1000
    # How many changes may go at once beyond the steady rate (GCRA tolerance, in changes).
    rate_burst: NonNegative = 10
    # Talon.One reports one account; the Audience body carries it.
    account_id: Positive = 1
    # arq queue name; separate deployments sharing one Redis use different names.
    queue_name: str = "cohortsync:queue"
    # Concurrent jobs per worker replica.
    worker_max_jobs: Positive = 200
    # Each worker replica's own /healthz and /metrics (on http_host); 0 serves neither.
    worker_metrics_port: Port = 9090
    # A job (including its wait for a rate-limit slot) is re-run by another replica after this.
    job_timeout_s: Positive = 300
    # Dispatch tops arq's ready queue up to this many jobs, never more.
    dispatch_watermark: Positive = 500
    # Entries one dispatch call moves from the backlogs into arq.
    dispatch_batch: Positive = 200
    # Entries taken from one audience's backlog per round-robin turn.
    dispatch_quantum: Positive = 10
    # Past this many queued changes the edge answers 429 and enqueues nothing.
    max_backlog: Positive = 50_000_000
    # Group commit: flush when this many rows wait, or after this long.
    group_commit_max_rows: Positive = 500
    group_commit_delay_ms: PositiveFloat = 2.0
    # How long the edge trusts what it learnt about an API key or an audience.
    auth_cache_ttl_s: PositiveFloat = 10.0
    audience_cache_ttl_s: PositiveFloat = 2.0
    # Largest request body the edge reads.
    max_body_bytes: Positive = 8 * 1024 * 1024
    # Comma-separated hostnames the CDP endpoints answer for (their destination-hostname
    # header, e.g. mycompany.europe-west1.talon.one); empty answers for any.
    allowed_destination_hostnames: str = ""
    # On SIGTERM a worker takes no new jobs and gives running ones this long to finish; the rest
    # go back to the queue for another replica. Keep it below the orchestrator's kill timeout.
    shutdown_grace_s: Annotated[float, Meta(ge=0)] = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.ops_port and self.ops_port == self.http_port:
            raise ValueError(f"{PREFIX}OPS_PORT: must differ from {PREFIX}HTTP_PORT")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``COHORTSYNC_*`` entries; a bad value names its variable."""
        fields = {f.name: f for f in msgspec.structs.fields(cls)}
        raw: dict[str, Any] = {}
        for key, value in environ.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :].lower()
            if name not in fields:
                continue
            raw[name] = value
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as e:
            raise SettingsError(_explain(str(e))) from e

    def log_level_number(self) -> int:
        """``log_level`` as a ``logging`` level; ``SettingsError`` naming the variable if none."""
        level = logging.getLevelName(self.log_level.upper())
        if not isinstance(level, int):
            raise SettingsError(f"{PREFIX}LOG_LEVEL: unknown level {self.log_level!r}")
        return level

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (used by tests and the local runner)."""
        return msgspec.structs.replace(self, **changes)


def _explain(message: str) -> str:
    # msgspec says "... - at `$.rate_limit_per_minute`"; name the variable instead.
    if "- at `$." in message:
        text, _, path = message.rpartition(" - at `$.")
        field = path.rstrip("`").split(".")[0].split("[")[0]
        return f"{PREFIX}{field.upper()}: {text}"
    return message
