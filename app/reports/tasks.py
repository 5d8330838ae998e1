"""Reports' background work: keeping the public figures current even while nobody reads them, so a read never
finds them stale (a read still refreshes them itself where no worker runs)."""

from __future__ import annotations

from datetime import timedelta

from app.core.jobs import JobContext, Periodic, Task
from app.core.settings import Settings
from app.reports.service import TransparencyReport


def transparency_report(ctx: JobContext) -> TransparencyReport:
    settings = ctx.settings
    return TransparencyReport(
        ctx.sessionmaker,
        ctx.clock,
        refresh=timedelta(seconds=settings.transparency_refresh_seconds),
        window=timedelta(days=settings.return_window_days),
        base_currency=settings.base_currency,
    )


async def refresh_transparency(ctx: JobContext, _: bytes) -> None:
    """Recompute the public figures once they are as old as `G4G_TRANSPARENCY_REFRESH_SECONDS` (a no-op before,
    and left to another process that is refreshing them right now)."""
    await transparency_report(ctx).refresh_if_due()


TASKS = [Task("reports.refresh_transparency", refresh_transparency, concurrency=1)]


def periodic(settings: Settings) -> list[Periodic]:
    # Ticks every minute; each tick recomputes only what is due.
    return (
        [Periodic("reports.refresh_transparency", "* * * * *")]
        if settings.transparency_refresh_seconds
        else []
    )
