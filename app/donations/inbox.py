"""The order-webhook inbox pipeline: concurrent deliveries share transactions, each answered only after the
transaction holding it committed.

Each request hands its parsed delivery to `submit` and waits. A few worker tasks take the deliveries waiting,
apply them together in one transaction (`ingest.receive`: one set-based statement per step for the whole batch),
commit, and then answer each request. Under load this turns N commits into one without adding latency when idle:
a worker never waits for a batch to fill. The waiting deliveries are shared among the idle workers, at least
`batch` each (a batch has a fixed cost that small ones pay too often) and at most `max_batch`: so two or more
batches are in flight, and the process decides one while PostgreSQL runs another, rather than all of them riding
in one batch while the process waits. Deadlocks and serialisation failures are retried; any other failure of a
batch is retried one delivery at a time, so one bad event can only fail its own request, except losing the
database (a failover), which fails the whole batch at once (503)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

import asyncpg
import structlog

from app.core.clock import Clock
from app.core.database import FairPool, database_unavailable, pooled
from app.core.observability import ORDER_WEBHOOKS, labelled
from app.donations import ingest
from app.donations.outcomes import Outcome

log = structlog.get_logger("g4g.inbox")

_RETRYABLE = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    ingest.ClaimRace,
)


@dataclass(slots=True)
class _Waiting:
    delivery: ingest.Delivery
    answer: asyncio.Future[Outcome]


class OrderEventInbox:
    def __init__(
        self, pool: FairPool, clock: Clock, *, batch: int = 16, max_batch: int = 64, concurrency: int = 4
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._batch = min(batch, max_batch)
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._idle = 0  # workers waiting for a delivery
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"inbox-{i}") for i in range(self._concurrency)
        ]

    async def stop(self) -> None:
        """Finish what was submitted, then stop."""
        await self._queue.join()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def submit(self, delivery: ingest.Delivery) -> Outcome:
        """Durably record and apply one delivery; returns once its transaction committed."""
        waiting = _Waiting(delivery, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(waiting)
        # Not shielded: a caller that goes away cancels only its answer; the delivery is still applied with its
        # batch, which skips answers already done.
        return await waiting.answer

    async def _work(self) -> None:
        while True:
            self._idle += 1
            try:
                batch = [await self._queue.get()]
            finally:
                self._idle -= 1
            size = self.share(1 + self._queue.qsize())
            while len(batch) < size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._settle(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def share(self, waiting: int) -> int:
        """How many of `waiting` deliveries a worker that just woke takes: an equal share with the idle workers."""
        return min(self._max_batch, max(self._batch, math.ceil(waiting / (self._idle + 1))))

    async def _settle(self, batch: list[_Waiting]) -> None:
        try:
            answers = await self._apply_with_retries([w.delivery for w in batch])
        except Exception as exc:
            if len(batch) > 1 and not database_unavailable(exc):
                log.warning(
                    "inbox_batch_failed_retrying_one_by_one", size=len(batch), error=type(exc).__name__
                )
                for waiting in batch:
                    await self._settle([waiting])
                return
            if database_unavailable(exc):  # no primary right now: every request of the batch gets a 503
                log.warning("inbox_database_unavailable", size=len(batch), error=type(exc).__name__)
            else:
                log.error("inbox_delivery_failed", exc_info=exc, webhook_id=batch[0].delivery.webhook_id)
            for waiting in batch:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
            return
        for waiting, answer in zip(batch, answers, strict=True):
            labelled(ORDER_WEBHOOKS, "duplicate" if answer.redelivered else answer.status).inc()
            if not waiting.answer.done():
                waiting.answer.set_result(answer)

    async def _apply_with_retries(self, deliveries: list[ingest.Delivery]) -> list[Outcome]:
        for attempt in range(5):
            try:
                return await self._apply_once(deliveries)
            except _RETRYABLE:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.005 * 2**attempt)
        raise AssertionError("unreachable")

    async def _apply_once(self, deliveries: list[ingest.Delivery]) -> list[Outcome]:
        async with pooled(self._pool) as db:
            return await ingest.receive(db, deliveries, now=self._clock.now())
