"""Settlement's background work. (The lead adapts this as settlement changes: keep it a thin call.)"""

from __future__ import annotations

from datetime import timedelta

from app.core.jobs import JobContext, Periodic, Task
from app.core.settings import Settings
from app.settlement import service


async def run_scheduled_settlement(ctx: JobContext, _: bytes) -> None:
    """What `POST /v1/settlement-runs` does, on `G4G_SETTLEMENT_SCHEDULE`: bill final donations, then charge
    unpaid statements. Safe to repeat: an order is billed once, ever, and charges carry Stripe idempotency keys."""
    settings = ctx.settings
    now = ctx.clock.now()
    async with ctx.sessionmaker() as session, session.begin():
        await service.run_settlement(
            session,
            as_of=now,
            now=now,
            window=timedelta(days=settings.return_window_days),
            min_invoice=settings.min_invoice,
        )
    if ctx.stripe is not None:
        await service.charge_due_statements(
            ctx.sessionmaker, ctx.stripe, now=now, base_currency=settings.base_currency
        )


TASKS = [Task("settlement.run", run_scheduled_settlement, concurrency=1)]


def periodic(settings: Settings) -> list[Periodic]:
    schedules = []
    if settings.settlement_schedule:
        schedules.append(Periodic("settlement.run", settings.settlement_schedule))
    # The periodic Stripe reconciliation (issue 12) is one more `Periodic` appended here, with its `Task` above.
    return schedules
