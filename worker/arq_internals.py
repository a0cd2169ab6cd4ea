"""Every use of arq's private internals, in one place (tests/worker/test_arq_contract.py)."""

from __future__ import annotations

import abc
import asyncio
import signal
import warnings

from arq.worker import Worker

# What this module relies on in arq 0.28's Worker, beyond its constructor, ``async_run``,
# ``close``, ``ctx`` and ``pool``; the contract test checks each name and its shape.
PRIVATE_ATTRIBUTES = (
    "sem",  # BoundedSemaphore(max_jobs + 1) that arq's start_jobs acquires per job
    "job_counter",  # jobs started and not ended, against max_jobs
    "tasks",  # job id -> runner task (arq's run_job), reaped by the poll loop
    "job_tasks",  # job id -> the task running the job function itself, while it runs
    "allow_pick_jobs",  # False: the poll loop starts no more jobs
    "main_task",  # arq's main loop, once async_run started it
    "loop",
    "_pool",
    "_handle_signals",
)
OVERRIDDEN_METHODS = ("_poll_iteration", "finish_job", "finish_failed_job", "close")
CALLED_METHODS = ("run_job", "heart_beat", "handle_sig", "_release_sem_dec_counter_on_complete")


class ArqWorker(Worker, abc.ABC):
    """arq's ``Worker`` opened up through typed methods, for a worker that claims its own jobs.

    arq has no extension points for choosing which jobs to start or for settling them, so
    this class overrides its private methods and keeps its private counters; subclasses use
    only what is defined here. Hooks a subclass implements: ``poll`` (one turn of arq's poll
    loop), ``job_ended`` (arq's ``finish_job``) and ``job_unrunnable`` (``finish_failed_job``);
    it may extend ``run_claimed`` and ``forget_health``.
    """

    # --- hooks -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def poll(self) -> None:
        """One turn of the poll loop, run by arq's main loop every ``poll_delay``."""

    @abc.abstractmethod
    async def job_ended(self, job_id: str, *, finished: bool, incr_score_ms: int | None) -> None:
        """A run of a job ended: ``finished`` when it returned or failed for good, else it is to
        run again (retried or cancelled); ``incr_score_ms`` is arq's deferral, what it would add
        to the job's score (None: none)."""

    @abc.abstractmethod
    async def job_unrunnable(self, job_id: str) -> None:
        """arq gave up on a job without running it: its key is gone, its payload unreadable,
        its function unknown, or its tries exhausted."""

    async def run_claimed(self, job_id: str, score: int) -> None:
        """Run one job this worker claimed, through arq: its payload is read, its function
        called with arq's timeout and retries, and ``job_ended`` or ``job_unrunnable`` told."""
        await self.run_job(job_id, score)

    async def forget_health(self) -> None:
        """Remove this replica's health key, as the last Redis call of ``close``."""
        await self.pool.delete(self.health_check_key)

    # --- state ------------------------------------------------------------------------------

    @property
    def room(self) -> int:
        """How many more jobs may start now (``max_jobs`` less those running)."""
        room: int = self.max_jobs - self.job_counter
        return room

    @property
    def picking(self) -> bool:
        """False once ``stop_picking`` was called."""
        return bool(self.allow_pick_jobs)

    def stop_picking(self) -> None:
        """Start no more jobs; those running go on."""
        self.allow_pick_jobs = False

    @property
    def loop_ended(self) -> bool:
        """True once arq's main loop, started by ``async_run``, has returned or failed."""
        return self.main_task is not None and bool(self.main_task.done())

    @property
    def functions_running(self) -> int:
        """How many job functions run now (runners past reading their job, not yet ended)."""
        return len(self.job_tasks)

    def unfinished(self) -> dict[str, asyncio.Task[None]]:
        """The runners of the jobs not yet ended, by job id."""
        return {job_id: t for job_id, t in self.tasks.items() if not t.done()}

    # --- actions ----------------------------------------------------------------------------

    async def start_job(self, job_id: str, score: int) -> None:
        """Start ``run_claimed`` for a claimed job, counted against ``max_jobs`` as arq counts
        its own; waits only when more than ``room`` jobs are started."""
        await self.sem.acquire()
        self.job_counter += 1
        runner = self.loop.create_task(self.run_claimed(job_id, score))
        runner.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
        self.tasks[job_id] = runner

    def reap_runners(self) -> None:
        """Forget the runners that ended, raising what one raised (a bug in a runner must not
        pass silently)."""
        for job_id, runner in list(self.tasks.items()):
            if runner.done():
                del self.tasks[job_id]
                runner.result()

    def cancel_jobs(self) -> None:
        """Cancel the running job functions (not their runners): arq then ends each run as
        cancelled, ``job_ended`` with ``finished=False``, so the job runs again."""
        for job in list(self.job_tasks.values()):
            job.cancel()

    async def beat(self) -> None:
        """arq's heartbeat: its health key, refreshed every ``health_check_interval``."""
        await self.heart_beat()

    async def close(self) -> None:
        """arq's ``close``: cancel what still runs, wait for the runners, ``forget_health``, run
        ``on_shutdown`` and close the Redis pool."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)  # as arq's own close: cancel what still runs
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values())
        await self.forget_health()
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with warnings.catch_warnings():
            # arq 0.28 closes its pool with redis-py's deprecated close().
            warnings.filterwarnings("ignore", "Call to deprecated close", DeprecationWarning)
            await self.pool.close(close_connection_pool=True)
        self._pool = None

    # --- arq's private methods, overridden --------------------------------------------------

    async def _poll_iteration(self) -> None:
        await self.poll()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        # Results are not kept (keep_result=0) and arq's in-progress keys are not used.
        await self.job_ended(job_id, finished=finish, incr_score_ms=incr_score)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        await self.job_unrunnable(job_id)
