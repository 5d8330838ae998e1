"""Running the service's background jobs inside a test, with the app's own clock and database."""

from __future__ import annotations

from typing import Any

from app.core.jobs import JobContext
from app.worker import TASKS, http_client, make_worker


def job_context(app: Any) -> JobContext:
    state = app.state
    return JobContext(
        settings=state.settings,
        clock=state.clock,
        engine=state.engine,
        sessionmaker=state.sessionmaker,
        cipher=state.cipher,
        http=http_client(state.settings),
        stripe=state.stripe,
    )


async def drain_jobs(app: Any) -> None:
    """Run every queued job (and the jobs those enqueue) with the real worker, until none is left."""
    context = job_context(app)
    try:
        await make_worker(context).run(drain=True)
    finally:
        await context.http.aclose()


async def run_task(app: Any, name: str) -> None:
    """Run one task now, as its schedule would (e.g. `events.retry_due` after moving the clock)."""
    context = job_context(app)
    try:
        task = next(t for t in TASKS if t.name == name)
        await task.run(context, b"")
    finally:
        await context.http.aclose()
