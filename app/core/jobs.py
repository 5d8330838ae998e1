"""Background jobs on PostgreSQL, with the pgqueuer library: enqueue inside the caller's transaction, run in any
number of worker processes sharing the database.

- `enqueue(db, task, payloads)` writes jobs through the asyncpg connection of the caller's transaction (one
  statement for any number of jobs): a job exists only if the change that caused it commits.
- `Worker` runs the tasks it is given (`app/worker.py` lists every task and schedule). A job whose worker stops
  sending heartbeats (killed with `kill -9`, frozen) is picked again by another worker once its heartbeat is
  `G4G_JOB_HEARTBEAT_SECONDS` old, so handlers must be idempotent: every one in this service checks what it is
  about to do against the database first. Stopping a worker (SIGTERM) lets its running jobs finish.
- A job that raises is tried again, after a pause that doubles each time (`G4G_JOB_RETRY_SECONDS`, at most ten
  minutes), up to `G4G_JOB_ATTEMPTS` tries; one that still fails stays in the queue's table as `failed` (with its
  traceback in `pgqueuer_log`) for the operator, rather than being dropped.
- Periodic tasks (cron) are ticked by pgqueuer's scheduler: one worker takes each tick (a row lock in
  `pgqueuer_schedules`), and a tick only enqueues the task's job, deduplicated by the task's name, so a run that
  outlasts its interval is never doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import structlog
from cryptography.fernet import MultiFernet
from pgqueuer import AsyncpgDriver, Queries, QueueManager, SchedulerManager
from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment, QueryQueueBuilder, QuerySchedulerBuilder
from pgqueuer.core.executors import DatabaseRetryEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.models import Job, Schedule
from pgqueuer.types import QueueExecutionMode
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.clock import Clock
from app.core.database import (
    CONNECT_TIMEOUT_SECONDS,
    asyncpg_options,
    asyncpg_url,
    database_unavailable,
    driver_dsn,
)
from app.core.observability import JOBS_ENQUEUED, JOBS_RUN
from app.core.settings import Settings

log = structlog.get_logger("g4g.jobs")

# How long a worker that lost its database waits before connecting again (each attempt is bounded too).
RECONNECT_PAUSE_SECONDS = 1.0
# The longest pause between two tries of a failing job.
MAX_RETRY_PAUSE = timedelta(minutes=10)


@dataclass
class JobContext:
    """What a job may use: built once per worker (or taken from the app for the embedded worker)."""

    settings: Settings
    clock: Clock
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cipher: MultiFernet
    http: httpx.AsyncClient
    stripe: Any = None  # app.settlement.stripe_gateway.StripeGateway when Stripe is configured


JobHandler = Callable[[JobContext, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    run: JobHandler
    # How many of its jobs may run at once across every worker (0: no limit).
    concurrency: int = 0


@dataclass(frozen=True, slots=True)
class Periodic:
    """Enqueue `task` (empty payload) on every tick of `cron` (UTC; a sixth field counts seconds)."""

    task: str
    cron: str


# pgqueuer reads its table names from the environment each time these are built; build them once.
_BUILDERS: dict[str, Any] = {}


def queue_queries(db: asyncpg.Connection) -> Queries:
    if not _BUILDERS:
        _BUILDERS.update(qbe=QueryBuilderEnvironment(), qbq=QueryQueueBuilder(), qbs=QuerySchedulerBuilder())
    return Queries(AsyncpgDriver(db), **_BUILDERS)


async def enqueue(
    db: asyncpg.Connection,
    task: str,
    payloads: Sequence[bytes],
    *,
    dedupe_keys: Sequence[str | None] | None = None,
) -> None:
    """Enqueue jobs in the transaction `db` is in (one statement). A job whose dedupe key is already queued or
    running is skipped."""
    if not payloads:
        return
    count = len(payloads)
    await queue_queries(db).enqueue(
        [task] * count,
        list(payloads),
        [0] * count,
        None,
        list(dedupe_keys) if dedupe_keys is not None else None,
        on_conflict="skip",
    )
    JOBS_ENQUEUED.labels(task).inc(count)


@dataclass
class Worker:
    """Runs jobs of the given tasks, and ticks the periodic ones, until `stop()`."""

    context: JobContext
    tasks: Sequence[Task]
    periodic: Sequence[Periodic] = ()
    _managers: list[QueueManager | SchedulerManager] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def _connect(self) -> asyncpg.Connection:
        """A session for the queue (pgqueuer LISTENs on it for new jobs): to `DATABASE_LISTEN_URL` when set (the
        server itself, past a transaction pooler, where LISTEN would not hear), else the service's database."""
        settings = self.context.settings
        if settings.database_listen_url is not None:
            direct: asyncpg.Connection = await asyncpg.connect(
                driver_dsn(asyncpg_url(settings.database_listen_url)), timeout=CONNECT_TIMEOUT_SECONDS
            )
            return direct
        if settings.transaction_pooling:
            log.warning(
                "jobs.listen_through_pooler",
                reason="G4G_TRANSACTION_POOLING without DATABASE_LISTEN_URL: LISTEN does not hear through a "
                "transaction pooler",
                effect="new jobs are found by polling, not at once",
            )
        pooled: asyncpg.Connection = await asyncpg.connect(
            driver_dsn(self.context.engine.url.render_as_string(hide_password=False)),
            timeout=CONNECT_TIMEOUT_SECONDS,
            **asyncpg_options(settings),
        )
        return pooled

    def _handler(self, task: Task) -> Callable[[Job], Awaitable[None]]:
        async def run(job: Job) -> None:
            started = time.perf_counter()
            structlog.contextvars.bind_contextvars(job_id=int(job.id), task=task.name)
            try:
                await task.run(self.context, job.payload or b"")
            except Exception as exc:
                JOBS_RUN.labels(task.name, "failed").inc()
                log.error(
                    "job_failed", exc_info=exc, duration_ms=round((time.perf_counter() - started) * 1000)
                )
                raise
            else:
                JOBS_RUN.labels(task.name, "succeeded").inc()
            finally:
                structlog.contextvars.unbind_contextvars("job_id", "task")

        return run

    def _retrying(self, parameters: EntrypointExecutorParameters) -> DatabaseRetryEntrypointExecutor:
        settings = self.context.settings
        return DatabaseRetryEntrypointExecutor(
            parameters,
            max_attempts=settings.job_attempts - 1,  # pgqueuer counts the retries after the first try
            initial_delay=timedelta(seconds=settings.job_retry_seconds),
            max_delay=MAX_RETRY_PAUSE,
        )

    def _tick(self, periodic: Periodic) -> Callable[[Schedule], Awaitable[None]]:
        async def tick(_: Schedule) -> None:
            async with self.context.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                db: asyncpg.Connection = raw.driver_connection
                async with db.transaction():
                    await enqueue(db, periodic.task, [b""], dedupe_keys=[f"periodic:{periodic.task}"])

        return tick

    async def run(self, *, drain: bool = False) -> None:
        """Work until `stop()`; with `drain`, until no job is left (and run no schedules). When the database goes
        away (a failover, SPEC §17) the worker's connections are dropped and opened again, to whichever server is
        the primary by then; a job that was running is picked again once its heartbeat is old."""
        while True:
            try:
                await self._run_connected(drain=drain)
                return
            except Exception as exc:
                if self._stopping.is_set() or not database_unavailable(exc):
                    raise
                log.warning("worker_reconnecting", error=type(exc).__name__)
                # The jobs' pooled connections went with the database: open new ones for the next jobs.
                await self.context.engine.dispose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RECONNECT_PAUSE_SECONDS)
            if self._stopping.is_set():
                return

    async def _run_connected(self, *, drain: bool) -> None:
        settings = self.context.settings
        connections: list[asyncpg.Connection] = []
        self._managers = []
        try:
            queue_connection = await self._connect()
            connections.append(queue_connection)
            manager = QueueManager(queue_queries(queue_connection))
            for task in self.tasks:
                manager.entrypoint(
                    task.name,
                    concurrency_limit=task.concurrency,
                    accepts_context=False,
                    on_failure="hold",
                    executor_factory=self._retrying,
                )(self._handler(task))
            self._managers.append(manager)
            runs: list[Coroutine[Any, Any, None]] = [
                manager.run(
                    batch_size=settings.worker_concurrency,
                    max_concurrent_tasks=2 * settings.worker_concurrency,
                    mode=QueueExecutionMode.drain if drain else QueueExecutionMode.continuous,
                    heartbeat_timeout=timedelta(seconds=settings.job_heartbeat_seconds),
                    dequeue_timeout=timedelta(seconds=10),
                )
            ]
            if self.periodic and not drain:
                schedule_connection = await self._connect()
                connections.append(schedule_connection)
                scheduler = SchedulerManager(queue_queries(schedule_connection))
                for periodic in self.periodic:
                    scheduler.schedule(periodic.task, periodic.cron, accepts_context=False)(
                        self._tick(periodic)
                    )
                self._managers.append(scheduler)
                runs.append(scheduler.run())
            if self._stopping.is_set():
                return
            log.info(
                "worker_started", tasks=[t.name for t in self.tasks], periodic=[p.task for p in self.periodic]
            )
            # One fails (its connection broke): the others stop too, and all reconnect together.
            async with asyncio.TaskGroup() as group:
                for each in runs:
                    group.create_task(each)
        finally:
            for connection in connections:
                try:
                    await connection.close(timeout=CONNECT_TIMEOUT_SECONDS)
                except Exception:  # broken (the database went away): drop it without a goodbye
                    connection.terminate()
            log.info("worker_stopped")

    def stop(self) -> None:
        """Take no new job; the running ones finish."""
        self._stopping.set()
        for manager in self._managers:
            manager.shutdown.set()


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One task's jobs: waiting, running, and failed since some time (pgqueuer's queue and its log)."""

    entrypoint: str
    queued: int
    running: int
    failed: int


async def queue_status(session: AsyncSession, *, failed_since: datetime) -> list[QueueStatus]:
    rows = await session.execute(
        text(
            """SELECT entrypoint,
                      count(*) FILTER (WHERE kind = 'queued') AS queued,
                      count(*) FILTER (WHERE kind = 'picked') AS running,
                      count(*) FILTER (WHERE kind = 'failed') AS failed
               FROM (SELECT entrypoint, status::text AS kind FROM pgqueuer
                     UNION ALL
                     SELECT entrypoint, 'failed' FROM pgqueuer_log
                     WHERE status IN ('exception', 'failed') AND created > :since) AS jobs
               GROUP BY entrypoint ORDER BY entrypoint"""
        ),
        {"since": failed_since},
    )
    return [QueueStatus(r.entrypoint, int(r.queued), int(r.running), int(r.failed)) for r in rows]
