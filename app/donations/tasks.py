"""Donations' background work: forgetting old order-webhook inbox rows."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import structlog

from app.core import partitions
from app.core.jobs import JobContext, Periodic, Task
from app.donations import repository

log = structlog.get_logger("g4g.donations")

INBOX = "webhook_deliveries"  # partitioned by month on `received_at` (`app/core/partitions.py`)
SWEEP_BATCH = 1000


async def sweep_inbox(ctx: JobContext, _: bytes) -> None:
    """Forget the inbox's months that ended more than `G4G_INBOX_RETENTION_DAYS` ago, each dropped whole. A
    month still holding a parked (or processing) delivery is kept, and only its settled rows are deleted, a
    batch per transaction; it goes whole once nothing waits in it. A redelivery of a forgotten webhook id is
    then applied as new and, its order or refund being known, changes nothing."""
    cutoff = ctx.clock.now() - timedelta(days=ctx.settings.inbox_retention_days)
    async with ctx.sessionmaker() as session:
        months = [p for p in await partitions.partitions(session, INBOX) if p.upper and p.upper <= cutoff]
    waiting_until = None
    for month in months:
        async with ctx.sessionmaker() as session:
            await partitions.detach(session, INBOX, month.name)
            if await repository.any_waiting(session, month.name):
                await session.rollback()
                waiting_until = month.upper
                continue
            await repository.drop_month(session, month.name)
            await session.commit()
        log.info("inbox month dropped", partition=month.name, before=month.upper)
    while waiting_until is not None:
        async with ctx.engine.connect() as connection:
            db: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            async with db.transaction():
                deleted = await repository.delete_settled_deliveries(
                    db, received_before=waiting_until, limit=SWEEP_BATCH
                )
        if deleted < SWEEP_BATCH:
            return


TASKS = [Task("donations.sweep_inbox", sweep_inbox, concurrency=1)]
PERIODIC = [Periodic("donations.sweep_inbox", "41 * * * *")]
