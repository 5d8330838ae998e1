"""Retention of events out: a month of deliveries goes whole (its partition dropped, with its attempts' and then
its events), once it ended before the retention's cutoff and none of its deliveries is still pending."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from ulid import ULID

from app.core.clock import FrozenClock
from app.core.partitions import add_months, month_start
from tests.jobs import run_task

ENDPOINT = "whe_" + str(ULID())


@pytest.fixture
def app(app_on_clock: Any) -> Any:
    return app_on_clock


async def _delivery(app: Any, at: datetime, status: str) -> str:
    """An event at `at` with its one delivery in `status` and one attempt; the delivery's id."""
    event_ulid = str(ULID.from_timestamp(at.timestamp()))
    delivery = f"dlv_{event_ulid}{ENDPOINT[4:]}"
    values = {
        "endpoint": ENDPOINT,
        "event": f"evt_{event_ulid}",
        "delivery": delivery,
        "status": status,
        "at": at,
        "attempt": "att_" + str(ULID()),
    }
    async with app.state.engine.begin() as connection:
        for statement in (
            """INSERT INTO webhook_endpoints (id, url, events)
               VALUES (:endpoint, 'https://example.org/h', ARRAY['order.paid']) ON CONFLICT DO NOTHING""",
            "INSERT INTO events (id, type, occurred_at, data) VALUES (:event, 'order.paid', :at, '{}')",
            """INSERT INTO event_deliveries (id, event_id, endpoint_id, status, created_at)
               VALUES (:delivery, :event, :endpoint, :status, :at)""",
            """INSERT INTO event_delivery_attempts (id, delivery_id, attempted_at, trigger, succeeded, duration_ms)
               VALUES (:attempt, :delivery, :at, 'scheduled', :status = 'delivered', 12)""",
        ):
            await connection.execute(text(statement), values)
    return delivery


async def _rows(app: Any, sql: str) -> list[Any]:
    async with app.state.engine.connect() as connection:
        return list((await connection.execute(text(sql))).scalars())


async def test_months_of_finished_deliveries_are_dropped_and_a_month_with_a_pending_one_waits(
    app: Any, clock: FrozenClock
) -> None:
    this_month = month_start(clock.now())
    old = await _delivery(
        app, clock.now() - timedelta(days=2), "delivered"
    )  # in the migration's first partition
    pending = await _delivery(app, add_months(this_month, 2) + timedelta(days=1), "pending")
    failed = await _delivery(app, add_months(this_month, 3) + timedelta(days=1), "failed")

    # Within the retention, nothing goes.
    await run_task(app, "events.sweep_deliveries")
    assert set(await _rows(app, "SELECT id FROM event_deliveries")) == {old, pending, failed}

    # Five months on (retention 30 days): every month that ended before the cutoff goes but the pending one's.
    clock.set(add_months(this_month, 5) + timedelta(days=10))
    await run_task(app, "events.sweep_deliveries")
    assert await _rows(app, "SELECT id FROM event_deliveries") == [pending]
    assert await _rows(app, "SELECT delivery_id FROM event_delivery_attempts") == [pending]
    assert await _rows(app, "SELECT id FROM events") == ["evt_" + pending[4:30]]
    left = await _rows(
        app, "SELECT relname FROM pg_class WHERE relname ~ '^event_deliveries_([0-9_]{7}|history)$'"
    )
    assert sorted(left) == [f"event_deliveries_{add_months(this_month, 2):%Y_%m}"]

    # Once delivered, its month goes too.
    async with app.state.engine.begin() as connection:
        await connection.execute(text("UPDATE event_deliveries SET status = 'delivered'"))
    await run_task(app, "events.sweep_deliveries")
    assert await _rows(app, "SELECT id FROM event_deliveries") == []
    assert await _rows(app, "SELECT id FROM events") == []
