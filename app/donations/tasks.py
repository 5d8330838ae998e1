"""Donations' background work: forgetting old order-webhook inbox rows."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from app.core.jobs import JobContext, Periodic, Task
from app.donations import repository

SWEEP_BATCH = 1000


async def sweep_inbox(ctx: JobContext, _: bytes) -> None:
    """Delete settled inbox rows older than `G4G_INBOX_RETENTION_DAYS`, a batch per transaction. A redelivery
    of a forgotten webhook id is then applied as new and, its order or refund being known, changes nothing."""
    cutoff = ctx.clock.now() - timedelta(days=ctx.settings.inbox_retention_days)
    while True:
        async with ctx.engine.connect() as connection:
            db: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
            async with db.transaction():
                deleted = await repository.delete_settled_deliveries(
                    db, received_before=cutoff, limit=SWEEP_BATCH
                )
        if deleted < SWEEP_BATCH:
            return


TASKS = [Task("donations.sweep_inbox", sweep_inbox, concurrency=1)]
PERIODIC = [Periodic("donations.sweep_inbox", "41 * * * *")]
