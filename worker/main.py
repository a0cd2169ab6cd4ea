"""``cohortsync-worker``: one worker replica; run as many as the backlog needs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import asyncpg
import redis.exceptions

from schemas import logs as log_format
from schemas.settings import Settings, SettingsError, help_epilog
from worker import logs, probe
from worker.app import ChangeWorker, create_worker, replica_name, stop_worker
from worker.errors import describe
from worker.metrics import render
from worker.state import STATE_KEY, WorkerState

# Start-up failures worth one line rather than a traceback.
UNREACHABLE = (OSError, redis.exceptions.RedisError, asyncpg.PostgresError, asyncpg.InterfaceError)

# Longest pause between two tries to start while Redis or Postgres is unreachable.
MAX_START_BACKOFF_S = 30.0

# The settings this process reads, listed by --help with their descriptions.
USED_SETTINGS = (
    "database_url",
    "redis_url",
    "rate_limit_per_minute",
    "rate_burst",
    "fleet_rate_limit_per_minute",
    "worker_capacity_per_second",
    "queue_name",
    "worker_max_jobs",
    "job_timeout_s",
    "shutdown_grace_s",
    "dispatch_watermark",
    "dispatch_batch",
    "dispatch_quantum",
    "group_commit_max_rows",
    "group_commit_delay_ms",
    "worker_metrics_port",
    "metrics_top_audiences",
    "http_host",
    "log_level",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cohortsync-worker",
        description="Run one cohortsync worker replica: move queued membership changes into "
        "arq's queue, each due at its slot of its tenant's rate (round-robin across tenants, "
        "deficit round-robin across each tenant's audiences), and apply them to Postgres. "
        "Stops cleanly on SIGTERM or SIGINT; unfinished jobs are re-run by another replica.",
        epilog=help_epilog(USED_SETTINGS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if the worker on this host answers /healthz on its metrics port, else 1 "
        "(a liveness probe)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
        level = settings.log_level_number()
    except SettingsError as e:
        print(f"cohortsync-worker: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    if args.check:
        problem = probe.check(settings)
        if problem:
            print(f"cohortsync-worker: unhealthy: {problem}", file=sys.stderr)
        raise SystemExit(1 if problem else 0)
    log_format.configure(level)
    if level > logging.DEBUG:
        # arq logs every job start and end at INFO: thousands of lines a minute.
        logging.getLogger("arq.worker").setLevel(max(level, logging.WARNING))

    try:
        asyncio.run(serve(settings))
    except UNREACHABLE as e:
        logging.getLogger(__name__).error("cannot run: %s", describe(e))
        raise SystemExit(1) from e


async def serve(settings: Settings) -> None:
    """Run one worker until SIGTERM or SIGINT; raise what stopped it otherwise.

    A worker that cannot start because Redis or Postgres is unreachable tries again with
    back-off (reporting why on /healthz) rather than exiting: after an outage every replica
    comes back by itself, without waiting out an orchestrator's crash-loop back-off.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    current: list[tuple[ChangeWorker, asyncio.Task[None]]] = []
    start_problem = "starting"

    def health() -> str | None:
        if not current:
            return start_problem
        worker, run = current[0]
        if run.done():
            return "worker stopped" if worker.started else start_problem
        return worker.health_problem()

    async def metrics() -> str:
        state: WorkerState = current[0][0].ctx[STATE_KEY]
        return await render(state.metrics, state.scripts, settings)

    http = probe.Probe(health, metrics, running=lambda: not stop.is_set())
    if settings.worker_metrics_port:
        await http.start(settings.http_host, settings.worker_metrics_port)
    replica = replica_name()
    logs.lifecycle("start", replica, f"worker {replica} started")
    failed_starts = 0
    try:
        while True:
            worker = create_worker(settings, handle_signals=False)
            run = asyncio.create_task(worker.async_run())
            current[:] = [(worker, run)]
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([run, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if stop.is_set():
                logs.lifecycle(
                    "stopping",
                    replica,
                    f"worker {replica} stopping: running jobs get {settings.shutdown_grace_s:g} s,"
                    " then go back to the queue",
                )
                await stop_worker(worker, run, grace_s=settings.shutdown_grace_s)
                break
            error = None if run.cancelled() else run.exception()
            if isinstance(error, UNREACHABLE) and not worker.started:
                start_problem = f"cannot start: {describe(error)}"
            await stop_worker(worker, run)
            if error is None:
                break
            if worker.started or not isinstance(error, UNREACHABLE):
                raise error
            failed_starts += 1
            delay_s = min(MAX_START_BACKOFF_S, 2.0**failed_starts)
            current.clear()
            logging.getLogger(__name__).warning("%s; trying again in %g s", start_problem, delay_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
            if stop.is_set():
                break
    finally:
        await http.stop()
    logs.lifecycle("stop", replica, f"worker {replica} stopped")


if __name__ == "__main__":
    main()
