"""Events-out background work: sending deliveries, enqueueing due retries, forgetting old deliveries."""

from __future__ import annotations

from app.core.jobs import JobContext, Periodic, Task
from app.events import service
from app.events.outbox import DELIVER_TASK


async def deliver(ctx: JobContext, payload: bytes) -> None:
    await service.attempt_delivery(ctx, service.DeliveryJob.parse(payload))


async def retry_due(ctx: JobContext, _: bytes) -> None:
    await service.enqueue_due_retries(ctx)


async def sweep_deliveries(ctx: JobContext, _: bytes) -> None:
    await service.sweep_old_deliveries(ctx)


TASKS = [
    Task(DELIVER_TASK, deliver),
    Task("events.retry_due", retry_due),
    Task("events.sweep_deliveries", sweep_deliveries),
]
PERIODIC = [
    Periodic(
        "events.retry_due", "* * * * * */10"
    ),  # every 10 seconds: the first retry is due 5 s after a failure
    Periodic("events.sweep_deliveries", "23 * * * *"),
]
