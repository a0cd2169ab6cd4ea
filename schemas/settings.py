"""Process settings, read once from ``COHORTSYNC_*`` variables into one frozen object."""

from __future__ import annotations

import argparse
import functools
import logging
import textwrap
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from schemas.redisurl import sentinel_address

PREFIX = "COHORTSYNC_"

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class SettingsError(ValueError):
    """A ``COHORTSYNC_*`` variable holds a value the process cannot start with."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a cohortsync process can be configured with; field ``x`` is ``COHORTSYNC_X``.

    Each field's description is the one text about it: ``--help`` and README.md's configuration
    table are generated from it (``python -m schemas.settings --markdown``).
    """

    database_url: Annotated[
        str, Meta(description="Postgres, the source of truth: API keys, audiences, memberships")
    ] = "postgresql://127.0.0.1:5432/postgres"
    redis_url: Annotated[
        str,
        Meta(
            description="Redis: backlogs, arq's queue, limiter, counters. `redis://`, "
            "`rediss://` or `unix://` for one server; `redis+sentinel://[:password@]host:port"
            "[,host:port...]/<master group>[/<db>]` for the primary Sentinel names, followed "
            "through failovers (deploy/README.md)"
        ),
    ] = "redis://127.0.0.1:6379/0"
    redis_ack_replicas: Annotated[
        NonNegative,
        Meta(
            description="replicas that must hold accepted changes before the edge answers "
            "(Redis `WAIT`), at most as many as the primary has connected (checked every 5 s): "
            "a Redis without replicas is not waited for; 0 never waits. Changes that were not "
            "confirmed in `COHORTSYNC_REDIS_ACK_TIMEOUT_MS` are answered 503, to be retried"
        ),
    ] = 1
    redis_ack_timeout_ms: Annotated[
        Positive,
        Meta(description="how long the edge waits for replicas to confirm accepted changes"),
    ] = 1000
    http_host: Annotated[
        str,
        Meta(
            description="address the edge listens on, and each worker's `/healthz` and "
            "`/metrics` (`COHORTSYNC_WORKER_METRICS_PORT`)"
        ),
    ] = "0.0.0.0"
    http_port: Annotated[
        Port,
        Meta(
            description="port the edge listens on: the APIs and probes "
            "(`make run`: 0 picks a free one)"
        ),
    ] = 8080
    ops_port: Annotated[
        Port,
        Meta(
            description="the edge's operations port: `/metrics` and `/dashboard` move there "
            "(with `/healthz`, `/readyz` and `/v1/status`, which the dashboard polls), off the "
            "public port, which keeps the APIs and probes; 0 serves everything on "
            "`COHORTSYNC_HTTP_PORT`; must differ from it"
        ),
    ] = 0
    request_read_timeout_s: Annotated[
        PositiveFloat,
        Meta(
            description="a request, headers and body, must arrive whole this long after its "
            "first byte (a connection's first request: after the connection opened), else the "
            "edge closes its connection: a body that never ends must not hold a connection "
            "for good"
        ),
    ] = 30.0
    keepalive_timeout_s: Annotated[
        PositiveFloat,
        Meta(
            description="an idle keep-alive connection is closed after this long (above the "
            "60 s idle timeout of common load balancers, so they close first and never send on "
            "a connection the edge closed)"
        ),
    ] = 75.0
    max_connections: Annotated[
        Positive,
        Meta(
            description="open connections per edge listener; one more is answered 503 with "
            "`Retry-After: 1` in the error shape of the surface asked, then closed (`/healthz` "
            "and `/readyz` are answered, then closed). The edge raises its open-file limit to "
            "what this needs (about two descriptors per connection) and stops at start-up, "
            "naming this variable, when the hard limit is lower"
        ),
    ] = 1000
    rate_limit_per_minute: Annotated[
        NonNegative,
        Meta(
            description="changes applied per minute, summed over all workers; 0 lifts the "
            "limit; `cohortsync-admin set-rate` overrides it at runtime. The edge assumes it "
            "for ETAs and `Retry-After` until the workers publish the rate they enforce"
        ),
    ] = 1000
    rate_burst: Annotated[
        NonNegative,
        Meta(
            description="changes allowed at once beyond the steady rate (the limiter's tolerance)"
        ),
    ] = 10
    fleet_rate_limit_per_minute: Annotated[
        NonNegative,
        Meta(
            description="changes per minute applied across all tenants, summed over all worker "
            "replicas, to protect Postgres; 0: no fleet-wide cap. When it binds, tenants with "
            "work share it equally"
        ),
    ] = 0
    account_id: Annotated[
        Positive,
        Meta(
            description="the default tenant's Talon.One account id, which its audiences "
            "report; `cohortsync-admin migrate` writes it into the tenants table (another "
            "tenant's: `cohortsync-admin tenant add --account-id`)"
        ),
    ] = 1
    queue_name: Annotated[
        str,
        Meta(
            description="namespace of every Redis key (arq's queue and jobs too, under one hash "
            "tag); deployments sharing one Redis need different names"
        ),
    ] = "cohortsync:queue"
    worker_max_jobs: Annotated[Positive, Meta(description="concurrent jobs per worker replica")] = (
        200
    )
    worker_metrics_port: Annotated[
        Port,
        Meta(
            description="each worker's own `/healthz` and `/metrics` (on "
            "`COHORTSYNC_HTTP_HOST`); 0 serves neither. `make run` gives its workers this port "
            "and the next"
        ),
    ] = 9090
    worker_capacity_per_second: Annotated[
        PositiveFloat,
        Meta(
            description="changes one worker replica applies per second with no limit, as "
            "`make bench` measures it here (worker capacity, 1 process); exported as "
            "`cohortsync_worker_capacity_changes_per_second` for autoscaling on demand"
        ),
    ] = 3000.0
    metrics_top_audiences: Annotated[
        int,
        Meta(
            ge=0,
            le=1000,
            description="`/metrics` reports the pending changes of this many audiences, those "
            "with the most (`cohortsync_audience_pending`), beside the totals over all; never "
            "one series per audience. 0 reports the totals only",
        ),
    ] = 20
    job_timeout_s: Annotated[
        Positive,
        Meta(
            description="longest run of one job, its wait for a rate slot included (then it "
            "goes back to the queue). A job whose replica died is not held this long: it runs "
            "again within one 10 s lease"
        ),
    ] = 300
    dispatch_watermark: Annotated[
        Positive,
        Meta(
            description="most jobs kept ready on arq's queue: dispatch tops it up to this, "
            "never more"
        ),
    ] = 500
    dispatch_batch: Annotated[
        Positive, Meta(description="backlog entries one dispatch call moves into arq")
    ] = 200
    dispatch_quantum: Annotated[
        Positive, Meta(description="entries taken from one audience per round-robin turn")
    ] = 5
    max_backlog: Annotated[
        Positive,
        Meta(description="queued changes past which the edge answers 429 and enqueues nothing"),
    ] = 50_000_000
    group_commit_max_rows: Annotated[
        Positive,
        Meta(
            description="the applier commits when this many rows wait, or sooner when the "
            "oldest has waited `COHORTSYNC_GROUP_COMMIT_DELAY_MS`"
        ),
    ] = 500
    group_commit_delay_ms: Annotated[
        PositiveFloat,
        Meta(
            description="the applier commits when the oldest waiting row has waited this "
            "long, or sooner when `COHORTSYNC_GROUP_COMMIT_MAX_ROWS` rows wait"
        ),
    ] = 2.0
    auth_cache_ttl_s: Annotated[
        PositiveFloat,
        Meta(
            description="how long the edge trusts what it learnt about an API key (a revoked "
            "key is refused within this)"
        ),
    ] = 10.0
    audience_cache_ttl_s: Annotated[
        PositiveFloat,
        Meta(description="how long the edge trusts what it learnt about an audience"),
    ] = 2.0
    max_body_bytes: Annotated[
        Positive,
        Meta(description="largest request body the edge reads; a larger one is answered 413"),
    ] = 8 * 1024 * 1024
    allowed_destination_hostnames: Annotated[
        str,
        Meta(
            description="comma-separated `destination-hostname` values the `/cdp/` endpoints "
            "answer the default tenant's keys for (e.g. `mycompany.europe-west1.talon.one`); "
            "others get 400. Empty answers for any but another tenant's hostname (401). A "
            "tenant's keys call for its own hostname only"
        ),
    ] = ""
    shutdown_grace_s: Annotated[
        float,
        Meta(
            ge=0,
            description="on SIGTERM a worker takes no new jobs and gives running ones this "
            "long to finish; the rest go back to the queue for another replica. Keep it below "
            "the orchestrator's kill timeout",
        ),
    ] = 10.0
    log_level: Annotated[str, Meta(description="`DEBUG`, `INFO`, `WARNING` or `ERROR`")] = "INFO"

    def __post_init__(self) -> None:
        if self.ops_port and self.ops_port == self.http_port:
            raise ValueError(f"{PREFIX}OPS_PORT: must differ from {PREFIX}HTTP_PORT")
        try:
            sentinel_address(self.redis_url)
        except ValueError as e:
            raise ValueError(f"{PREFIX}REDIS_URL: {e}") from e

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


def variable(name: str) -> str:
    """The environment variable of field ``name``: ``COHORTSYNC_<NAME>``."""
    return f"{PREFIX}{name.upper()}"


@functools.cache
def descriptions(struct: type[msgspec.Struct] = Settings) -> dict[str, str]:
    """Each field's description, in declaration order ("" for a field without one)."""
    hints = typing.get_type_hints(struct, include_extras=True)
    texts = {}
    for field in msgspec.structs.fields(struct):
        metas = getattr(hints[field.name], "__metadata__", ())
        found = [m.description for m in metas if isinstance(m, Meta) and m.description]
        texts[field.name] = found[-1] if found else ""
    return texts


def _default(name: str) -> str:
    value = getattr(Settings(), name)
    if value == "":
        return "empty"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_epilog(names: Sequence[str], width: int = 80) -> str:
    """The settings ``names`` for a process's ``--help``: variable, default, description."""
    lines = ["configuration (environment variables, read once at start):"]
    for name in names:
        text = descriptions()[name].replace("`", "")
        lines.append(f"  {variable(name)} (default: {_default(name)})")
        indent = " " * 6
        lines.append(
            textwrap.fill(
                text,
                width,
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def markdown_table() -> str:
    """README.md's configuration table: one row per field, in declaration order."""
    rows = ["| variable | default | meaning |", "|----------|---------|---------|"]
    for name, text in descriptions().items():
        default = _default(name)
        shown = default if default == "empty" else f"`{default}`"
        rows.append(f"| `{variable(name)}` | {shown} | {text} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.settings",
        description="Print the settings as documented on their fields.",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="README.md's configuration table (the default)"
    )
    parser.parse_args(argv)
    print(markdown_table(), end="")


if __name__ == "__main__":
    main()
