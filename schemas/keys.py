"""Every Redis key of one deployment, the backlog entry format and the job id format, in one screen.

Redis holds only what is in flight; Postgres is the source of truth. Nothing here has a TTL unless
said so: a queued change must never age out, however long the backlog.

A deployment's keys all carry one hash tag, ``{cs:<namespace>}``, the namespace being its
``COHORTSYNC_QUEUE_NAME``: deployments that share one Redis never touch each other's keys, and a
Redis Cluster would keep each deployment in one slot, as its scripts (many keys in one step) need.
Every script is told the keys it touches (``core/scripts``); none derives a key name from data.
"""

from __future__ import annotations

from typing import Literal

# Hash fields of ``Keys.config``: ``rate_per_minute`` and ``burst`` set by cohortsync-admin set-rate
# override the workers' own settings, which each replica publishes as ``workers_rate_per_minute``
# / ``workers_burst`` so status shows the rate the workers enforce, not the reader's settings.
CONFIG_RATE = "rate_per_minute"
CONFIG_BURST = "burst"
CONFIG_WORKERS_RATE = "workers_rate_per_minute"
CONFIG_WORKERS_BURST = "workers_burst"

# Amplitude retries a batch for minutes to hours (8 times with back-off), never for a week.
SEEN_TTL_S = 7 * 24 * 3600
# The measured rate sums the last minute's per-second counters; each expires soon after.
APPLIED_SECOND_TTL_S = 120

# The counters ``Keys.totals`` sums (with ``pending``, the sum of the audiences' pending), and
# the field of a stats hash saying its counters are in the totals (hashes written before the
# totals existed join them once: cohortsync-admin migrate, or the first script touching them).
TOTALS_FIELDS = ("accepted", "dispatched", "applied", "dropped", "dead")
STATS_IN_TOTALS = "in_totals"
# The field of a stats hash naming the audience's tenant (set by accept.lua).
STATS_TENANT = "tenant"
# An audience idle this long (nothing pending) loses its per-audience Redis keys (counters,
# version, clear): a day keeps a finished sync's numbers on status while people look at them;
# the totals keep counting them.
IDLE_RECLAIM_S = 24 * 3600

# arq's own layout (arq.constants): a job's payload and try counter live under these prefixes,
# keyed by job id. Our job ids carry the deployment's hash tag, so these keys do too.
ARQ_JOB_PREFIX = "arq:job:"
ARQ_IN_PROGRESS_PREFIX = "arq:in-progress:"
ARQ_RETRY_PREFIX = "arq:retry:"

# The tenant (one Talon.One deployment, ``tenants.id`` in Postgres) that data from before tenants
# existed belongs to, and that a single-deployment user's keys belong to.
DEFAULT_TENANT = 1

# Name of the arq function that applies one change.
APPLY_FUNCTION = "apply_change"


class Keys:
    """The Redis keys of the deployment ``namespace``: built once per process from its settings
    (``Keys(settings.queue_name)``) and passed to whatever reads or writes Redis."""

    __slots__ = (
        "_applied",
        "_backlog",
        "_health",
        "_stats",
        "_tenants",
        "audiences_pending",
        "backlog_total",
        "cleared",
        "config",
        "dead_letters",
        "dispatch_turn",
        "fleet_limiter",
        "leases",
        "namespace",
        "queue",
        "tag",
        "tenant_rates",
        "tenants_due",
        "tenants_known",
        "tenants_pending",
        "totals",
        "versions",
        "workers",
    )

    def __init__(self, namespace: str) -> None:
        tag = f"{{cs:{namespace}}}"
        self.namespace = namespace
        self.tag = tag
        # arq's queue (sorted set): job ids scored with the time (ms) they are due. Running jobs
        # are not on it but under ``leases``.
        self.queue = f"{tag}:queue"
        # Per-audience backlog (``backlog(id)``): a list of entries (``encode_entry``), appended
        # by the edge, popped by the dispatcher; ~35 bytes each against ~200 for an arq job.
        self._backlog = f"{tag}:backlog:"
        # Total entries across all backlogs: the edge refuses work (429) past max_backlog.
        self.backlog_total = f"{tag}:backlog:total"
        # Hash audience id -> last version handed out. Versions are max(last + 1, Redis time in
        # µs), so they stay monotonic per audience even when Redis loses this hash.
        self.versions = f"{tag}:versions"
        # Hash audience id -> version of the latest clear/delete; older changes are dropped.
        self.cleared = f"{tag}:cleared"
        # Hash per audience (``stats(id)``) counting accepted (edge), dispatched and dropped as
        # stale (dispatcher), applied, dropped and dead (worker, in the step that finishes the
        # job, once per job). Once drained, accepted = applied + dropped + dead. Its field
        # ``STATS_IN_TOTALS`` marks counters already added into ``totals``.
        self._stats = f"{tag}:stats:"
        # Hash of runtime configuration shared by all replicas (the CONFIG_* fields).
        self.config = f"{tag}:config"
        # Hash tenant id -> ``<rate per minute>:<burst>`` of every tenant with a rate of its own,
        # as the workers enforce it (published by each replica when it changes).
        self.tenant_rates = f"{tag}:tenants:rates"
        # Which replica is dispatching (set NX with a short expiry, cleared by dispatch.lua):
        # replicas take turns reading backlog heads instead of racing for the same entries
        # and throwing away the read and the jobs built from it.
        self.dispatch_turn = f"{tag}:dispatch:turn"
        # Changes that failed permanently, kept for an operator, never silently dropped: a list
        # of JSON ``DeadLetter``s; cohortsync-admin dead-letters replay re-queues them.
        self.dead_letters = f"{tag}:dead"
        # Leases on running jobs (sorted set): job id scored with the Redis time (ms) its lease
        # lapses. Its replica renews it; a lapsed lease makes the job claimable by any replica.
        self.leases = f"{tag}:leases"
        # Worker replicas (sorted set): each one's health key (``health_check(replica)``, arq's
        # status line, expiring when the replica stops) scored with the time (ms) after which
        # it may be forgotten, so readers count live replicas without a SCAN.
        self.workers = f"{tag}:workers"
        self._health = f"{tag}:health-check:"
        # Changes applied during one Unix second (``applied_second(s)``), written by the
        # workers, each expiring after APPLIED_SECOND_TTL_S.
        self._applied = f"{tag}:applied:"
        # Fleet-wide aggregates, kept by lib/counts.lua beside each tenant's own: ``totals``
        # (hash) sums every tenant's totals; ``audiences_pending`` (sorted set) ranks every
        # tenant's audiences with pending changes (/metrics' top N); ``tenants_pending`` ranks
        # the tenants with pending changes by how many (the ops view, busiest first);
        # ``tenants_known`` (set) every tenant with counters in Redis, so ``reclaim.lua`` can
        # visit each one's idle set.
        self.totals = f"{tag}:totals"
        self.audiences_pending = f"{tag}:audiences:pending"
        self.tenants_pending = f"{tag}:tenants:pending"
        self.tenants_known = f"{tag}:tenants:known"
        # Tenants with work (sorted set), scored with the Redis time (ms) from which the next
        # change of theirs may run under their rate: the dispatcher serves those due within its
        # horizon, earliest first, and a tenant just served goes behind the others — round-robin
        # across tenants, each at its own rate.
        self.tenants_due = f"{tag}:tenants:due"
        # The fleet-wide rate limit's next free slot (µs, Redis clock), when one is set
        # (COHORTSYNC_FLEET_RATE_LIMIT_PER_MINUTE); expires idle.
        self.fleet_limiter = f"{tag}:limiter:fleet"
        self._tenants: dict[int, TenantKeys] = {}

    def tenant(self, tenant: int) -> TenantKeys:
        """The keys of one tenant (one Talon.One deployment) in this namespace."""
        found = self._tenants.get(tenant)
        if found is None:
            found = self._tenants[tenant] = TenantKeys(self.tag, tenant)
        return found

    def tenant_totals(self, tenant: int) -> str:
        return self.tenant(tenant).totals

    def backlog(self, audience_id: int | str) -> str:
        return f"{self._backlog}{audience_id}"

    def stats(self, audience_id: int | str) -> str:
        return f"{self._stats}{audience_id}"

    def applied_second(self, second: int) -> str:
        return f"{self._applied}{second}"

    def health_check(self, replica: str) -> str:
        """A worker replica's arq health key, refreshed every few seconds; its value ends in
        ``j_ongoing=<jobs running in that replica> queued=<jobs on arq's queue>``."""
        return f"{self._health}{replica}"

    def job_id(self, audience_id: int | str, version: int | str) -> str:
        """One job per change, ``{cs:<namespace>}:<audience>:<version>``: unique because
        versions are unique per audience (``parse_job_id`` reads it back)."""
        return f"{self.tag}:{audience_id}:{version}"

    def job(self, job_id: str) -> str:
        """arq's key of a job's payload."""
        return ARQ_JOB_PREFIX + job_id

    def retry(self, job_id: str) -> str:
        """arq's count of a job's tries."""
        return ARQ_RETRY_PREFIX + job_id


class TenantKeys:
    """The keys of one tenant: what it has waiting, in which order its audiences take turns,
    its rate limiter, its counters and its de-duplication ids. Audiences' own keys (backlog,
    stats) need no tenant: audience ids are unique across tenants."""

    __slots__ = (
        "_applied",
        "_seen",
        "active_list",
        "active_set",
        "audiences_idle",
        "audiences_pending",
        "dispatch_credit",
        "id",
        "limiter",
        "totals",
    )

    def __init__(self, tag: str, tenant: int) -> None:
        prefix = f"{tag}:t:{tenant}"
        self.id = tenant
        # The tenant's audience ids with a non-empty backlog, in round-robin order (list), and
        # the same ids as a set so the edge can tell in O(1) whether one is already scheduled.
        self.active_list = f"{prefix}:active"
        self.active_set = f"{prefix}:active:set"
        # What is left of the turn of the audience at the head of its round-robin when a
        # dispatch cut it short (``<audience>:<entries>``), so it gets its whole quantum.
        self.dispatch_credit = f"{prefix}:dispatch:credit"
        # The next free slot (µs, Redis clock) of the tenant's rate limit (GCRA): dispatch gives
        # each change it queues the next slot as its due time. Expires idle.
        self.limiter = f"{prefix}:limiter"
        # The aggregates the scripts that change ``stats`` keep in the same step, so reading the
        # queue costs O(1) or O(page) whatever the audiences (``schemas/lua/lib/counts.lua``):
        # ``totals`` (hash) sums the tenant's audiences' counters (TOTALS_FIELDS), ever, and
        # their pending; ``audiences_pending`` (sorted set) ranks its audiences with pending
        # changes by how many; ``audiences_idle`` (sorted set) holds the others with counters,
        # scored with the Redis time (ms) they went idle, so their per-audience keys can be
        # reclaimed after IDLE_RECLAIM_S (``reclaim.lua``).
        self.totals = f"{prefix}:totals"
        self.audiences_pending = f"{prefix}:audiences:pending"
        self.audiences_idle = f"{prefix}:audiences:idle"
        # An Amplitude ``message_id`` already accepted for this tenant (``seen(id)``), set with
        # the batch's changes so a retried batch enqueues nothing; expires after SEEN_TTL_S.
        self._seen = f"{prefix}:seen:amplitude:"
        # The tenant's changes applied during one Unix second, as ``Keys.applied_second``.
        self._applied = f"{prefix}:applied:"

    def seen(self, message_id: str) -> str:
        return f"{self._seen}{message_id}"

    def applied_second(self, second: int) -> str:
        return f"{self._applied}{second}"


def parse_job_id(job_id: str) -> tuple[int, int]:
    """(audience id, version) of a ``Keys.job_id``; (0, 0) for an id of another shape."""
    _, audience, version = ["", "", *job_id.rsplit(":", 2)][-3:]
    try:
        return int(audience), int(version)
    except ValueError:
        return 0, 0


# A backlog entry is ``<a|d><version>:<profileIntegrationId>``, e.g. ``a1764345600123456:R195412``:
# one byte of action, the decimal version, a colon, then the id (which may itself hold colons).
# The edge sends accept.lua the action code and the id; the script puts the version between
# (``schemas/lua/lib/entry.lua``, the same format in Lua).
Action = Literal["add", "delete"]
ACTION_CODE: dict[str, str] = {"add": "a", "delete": "d"}


def encode_entry(action: Action, profile_id: str, version: int) -> str:
    return f"{ACTION_CODE[action]}{version}:{profile_id}"


def decode_entry(entry: str) -> tuple[Action, str, int]:
    """Split a backlog entry into (action, profile id, version)."""
    version, _, profile_id = entry[1:].partition(":")
    action: Action = "add" if entry[0] == "a" else "delete"
    return action, profile_id, int(version)
