"""How the inbox cuts the waiting order webhooks into transactions: shared among its idle workers, so that
batches overlap (one decided in the process while another runs in PostgreSQL), never below the batch size that
pays for a transaction's fixed cost, never above the maximum. No database: the transactions are stand-ins that
record their deliveries and wait to be let go."""

from __future__ import annotations

import asyncio
from typing import Any

from app.donations import ingest
from app.donations.inbox import OrderEventInbox
from app.donations.outcomes import Outcome


class _RecordingInbox(OrderEventInbox):
    """An inbox whose transactions record the webhook ids they hold and finish when `release` is set."""

    def __init__(self, **sizes: Any) -> None:
        super().__init__(pool=None, clock=None, **sizes)  # type: ignore[arg-type]  # neither is used here
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def _apply_with_retries(self, deliveries: list[ingest.Delivery]) -> list[Outcome]:
        self.batches.append([d.webhook_id for d in deliveries])
        await self.release.wait()
        return [Outcome("applied", 200, {"webhook_id": d.webhook_id}) for d in deliveries]


def _delivery(i: int) -> ingest.Delivery:
    return ingest.Delivery("plt_1", f"msg_{i:03d}", b"{}")


async def _submit_all(inbox: _RecordingInbox, ids: range) -> list[asyncio.Task[Outcome]]:
    tasks = [asyncio.create_task(inbox.submit(_delivery(i))) for i in ids]
    for _ in range(
        5
    ):  # let every submit queue its delivery, and the idle workers wake and take their batches
        await asyncio.sleep(0)
    return tasks


async def _finish(inbox: _RecordingInbox, tasks: list[asyncio.Task[Outcome]]) -> list[Outcome]:
    inbox.release.set()
    outcomes = await asyncio.gather(*tasks)
    await inbox.stop()
    return outcomes


async def test_a_few_waiting_webhooks_make_two_overlapping_batches_rather_than_one() -> None:
    """32 connections' worth of webhooks and four idle workers: two batches in flight at once (16 and 14), each
    webhook in exactly one, answered once both commit. With one batch of 30, the process would sit idle while
    PostgreSQL runs it."""
    inbox = _RecordingInbox(batch=16, max_batch=64, concurrency=4)
    inbox.start()
    tasks = await _submit_all(inbox, range(30))
    assert [len(b) for b in inbox.batches] == [16, 14]  # both taken before either finished
    assert sorted(w for b in inbox.batches for w in b) == [f"msg_{i:03d}" for i in range(30)]
    outcomes = await _finish(inbox, tasks)
    assert [o.body["webhook_id"] for o in outcomes] == [f"msg_{i:03d}" for i in range(30)]


async def test_a_long_queue_is_shared_equally_among_the_idle_workers_up_to_the_maximum() -> None:
    """200 waiting and four idle workers: 50 each, so no transaction grows past its share while others idle;
    with a maximum of 40, five batches of 40."""
    inbox = _RecordingInbox(batch=16, max_batch=64, concurrency=4)
    inbox.start()
    tasks = await _submit_all(inbox, range(200))
    assert [len(b) for b in inbox.batches] == [50, 50, 50, 50]
    await _finish(inbox, tasks)

    capped = _RecordingInbox(batch=16, max_batch=40, concurrency=4)
    capped.start()
    tasks = await _submit_all(capped, range(200))
    assert [len(b) for b in capped.batches] == [40, 40, 40, 40]  # the fifth waits for a worker to come back
    outcomes = await _finish(capped, tasks)
    assert [len(b) for b in capped.batches] == [40] * 5
    assert len(outcomes) == 200


async def test_a_worker_coming_back_to_a_queue_with_no_one_else_idle_takes_up_to_the_maximum() -> None:
    """Every other worker busy: the one free takes all it may, as big batches cost least an event under load."""
    inbox = _RecordingInbox(batch=16, max_batch=64, concurrency=2)
    inbox.start()
    first = await _submit_all(inbox, range(20))
    assert [len(b) for b in inbox.batches] == [16, 4]  # both workers now busy
    later = await _submit_all(inbox, range(20, 120))  # queued behind them
    assert [len(b) for b in inbox.batches] == [16, 4]
    outcomes = await _finish(inbox, first + later)
    # Released together: each worker comes back alone to the queue (the other still busy answering or
    # already back), so the first takes the maximum and the other the rest.
    assert sorted(len(b) for b in inbox.batches[2:]) == [36, 64]
    assert len(outcomes) == 120


def test_never_below_the_batch_size_nor_above_the_maximum() -> None:
    inbox = OrderEventInbox(pool=None, clock=None, batch=16, max_batch=64, concurrency=4)  # type: ignore[arg-type]
    assert inbox.share(3) == 16  # fewer waiting than that: the worker takes them all
    assert inbox.share(1000) == 64
    single = OrderEventInbox(pool=None, clock=None, batch=16, max_batch=1, concurrency=20)  # type: ignore[arg-type]
    assert single.share(50) == 1  # `G4G_INGEST_MAX_BATCH=1`: a transaction per delivery, as before
