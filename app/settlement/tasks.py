"""Settlement's background work: runs (started through the API or on a schedule) and the reconciliation of charges
whose outcome is unknown."""

from __future__ import annotations

from datetime import timedelta

from app.core.jobs import JobContext, Periodic, Task
from app.core.settings import Settings
from app.settlement import service


async def run_settlement(ctx: JobContext, payload: bytes) -> None:
    """A run started through the API (the payload is its id) or by `G4G_SETTLEMENT_SCHEDULE` (no payload): bill
    final donations, then charge unpaid statements. Safe to repeat: a run bills once, ever, and charges carry
    Stripe idempotency keys."""
    settings = ctx.settings
    await service.execute_settlement(
        ctx.sessionmaker,
        ctx.stripe,
        payload.decode() or None,
        now=ctx.clock.now(),
        window=timedelta(days=settings.return_window_days),
        min_invoice=settings.min_invoice,
        base_currency=settings.base_currency,
    )


async def reconcile_charges(ctx: JobContext, _: bytes) -> None:
    """Statements whose last charge has no known outcome are looked at again (their PaymentIntent retrieved, or
    the attempt repeated under its key, or looked up after a day), without waiting for the next run."""
    if ctx.stripe is not None:
        await service.reconcile_unknown_charges(
            ctx.sessionmaker, ctx.stripe, now=ctx.clock.now(), base_currency=ctx.settings.base_currency
        )


TASKS = [
    Task(service.SETTLEMENT_TASK, run_settlement, concurrency=1),
    Task("settlement.reconcile", reconcile_charges, concurrency=1),
]


def periodic(settings: Settings) -> list[Periodic]:
    schedules = []
    if settings.settlement_schedule:
        schedules.append(Periodic("settlement.run", settings.settlement_schedule))
    schedules.append(Periodic("settlement.reconcile", "*/15 * * * *"))
    return schedules
