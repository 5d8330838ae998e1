"""Every background task and schedule, in one screen (as `app/main.py` is for routes), and the `g4g worker`
process that runs them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import structlog

from app.core.clock import Clock, SystemClock
from app.core.database import (
    Database,
    drop_connections_when_unavailable,
    make_sessionmaker,
    sqlalchemy_connect_args,
)
from app.core.idempotency import delete_expired_records
from app.core.jobs import JobContext, Periodic, Task, Worker
from app.core.partitions import PARTITIONED, ensure_months_ahead
from app.core.secrets import cipher_for
from app.core.settings import Settings
from app.donations import tasks as donations
from app.events import tasks as events
from app.events.destinations import events_client
from app.reports import tasks as reports
from app.settlement import tasks as settlement

log = structlog.get_logger("g4g.worker")

SWEEP_BATCH = 1000


async def sweep_idempotency_records(ctx: JobContext, _: bytes) -> None:
    """Answers past `G4G_IDEMPOTENCY_TTL_HOURS` are already ignored; delete them, a batch per transaction."""
    while True:
        async with ctx.engine.connect() as connection:
            db: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            async with db.transaction():
                deleted = await delete_expired_records(db, now=ctx.clock.now(), limit=SWEEP_BATCH)
        if deleted < SWEEP_BATCH:
            return


async def make_partitions(ctx: JobContext, _: bytes) -> None:
    """Keep each partitioned table's months made three ahead (`app/core/partitions.py`), a table per
    transaction: a month is never made on the day it starts, so the default partition stays empty."""
    for table in PARTITIONED:
        async with ctx.sessionmaker() as session, session.begin():
            made = await ensure_months_ahead(session, table, now=ctx.clock.now())
        if made:
            log.info("partitions made", table=table, partitions=made)


TASKS: list[Task] = [
    *events.TASKS,
    *settlement.TASKS,
    *donations.TASKS,
    *reports.TASKS,
    Task("core.sweep_idempotency_records", sweep_idempotency_records, concurrency=1),
    Task("core.make_partitions", make_partitions, concurrency=1),
]


def periodic_tasks(settings: Settings) -> list[Periodic]:
    return [
        *events.PERIODIC,
        *settlement.periodic(settings),
        *donations.PERIODIC,
        *reports.periodic(settings),
        Periodic("core.sweep_idempotency_records", "11 * * * *"),
        Periodic("core.make_partitions", "17 3 * * *"),
    ]


def http_client(settings: Settings) -> httpx.AsyncClient:
    """For events out: see `events_client`; public addresses only unless the settings allow private ones."""
    return events_client(
        timeout_seconds=settings.events_timeout_seconds, public_only=not settings.private_urls_allowed
    )


def make_worker(context: JobContext) -> Worker:
    return Worker(context, TASKS, periodic_tasks(context.settings))


@contextlib.asynccontextmanager
async def standalone_context(
    settings: Settings, url: str, *, clock: Clock | None = None
) -> AsyncIterator[JobContext]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.settlement.stripe_gateway import StripeGateway

    engine = drop_connections_when_unavailable(
        create_async_engine(
            url,
            pool_size=settings.worker_concurrency + 2,
            connect_args=sqlalchemy_connect_args(settings),
        )
    )
    http = http_client(settings)
    stripe: Any = StripeGateway.from_settings(settings)
    try:
        yield JobContext(
            settings=settings,
            clock=clock or SystemClock(),
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            cipher=cipher_for(settings),
            http=http,
            stripe=stripe,
        )
    finally:
        await http.aclose()
        if stripe is not None:
            await stripe.close()
        await engine.dispose()


async def run_worker_process(settings: Settings, database: Database) -> None:
    """`g4g worker`: run jobs until SIGTERM or SIGINT, then let the running ones finish."""
    async with standalone_context(settings, database.url) as context:
        worker = make_worker(context)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
