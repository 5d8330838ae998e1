"""The order inbox partitioned by month: a webhook first received last month is still recognised this month (its
answer, its conflict, its parked payment), and retention drops whole months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.core.clock import FrozenClock
from app.core.partitions import (
    add_months,
    after_create_sql,
    create_month_sql,
    ensure_months_ahead,
    month_start,
    partition_name,
    partitions,
)
from app.donations.ingest import near_month_start
from tests.conftest import Shop
from tests.helpers import (
    assert_problem,
    audit_ok,
    create_merchant,
    order_paid,
    send_event,
)
from tests.jobs import run_task

INBOX = "webhook_deliveries"


@pytest.fixture
def app(app_on_clock: Any) -> Any:
    return app_on_clock


async def _sql(app: Any, sql: str, **params: Any) -> list[Any]:
    async with app.state.engine.begin() as connection:
        result = await connection.execute(text(sql), params)
        return list(result.all()) if result.returns_rows else []


async def _months_since_last(app: Any) -> str:
    """Lay the (empty) inbox out as a database converted months ago has it: one partition for last month and one
    for each month after, instead of the migration's first partition. Returns last month's partition's name."""
    async with app.state.sessionmaker() as session:
        history = next(p for p in await partitions(session, INBOX) if p.name == f"{INBOX}_history")
    assert history.upper is not None
    await _sql(app, f"ALTER TABLE {INBOX} DETACH PARTITION {history.name}")
    await _sql(app, f"DROP TABLE {history.name}")
    last_month = add_months(month_start(datetime.now(UTC)), -1)
    month = last_month
    while month < history.upper:
        await _sql(app, create_month_sql(INBOX, month))
        for statement in after_create_sql(INBOX, partition_name(INBOX, month)):
            await _sql(app, statement)
        month = add_months(month, 1)
    return partition_name(INBOX, last_month)


async def _move_to_last_month(app: Any, webhook_id: str) -> str:
    """Move a delivery's row into last month's partition (as if received then); the partition it is in."""
    [(partition,)] = await _sql(
        app,
        """UPDATE webhook_deliveries SET received_at = received_at - interval '1 month' WHERE webhook_id = :w
            RETURNING tableoid::regclass::text""",
        w=webhook_id,
    )
    return str(partition)


async def test_a_webhook_first_received_last_month_is_recognised_this_month(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any
) -> None:
    last_month = await _months_since_last(app)
    paid = order_paid("M-1", merchant=shop.external_id)
    first = await send_event(client, shop.platform, paid, webhook_id="msg_last_month")
    assert first.json() == {"status": "applied"}
    assert await _move_to_last_month(app, "msg_last_month") == last_month

    again = await send_event(client, shop.platform, paid, webhook_id="msg_last_month")
    assert (again.status_code, again.json()) == (200, {"status": "applied"})
    other = order_paid(
        "M-1", merchant=shop.external_id, items=[{"sku": "TEA-01", "quantity": 9, "amount": 1}]
    )
    assert_problem(
        await send_event(client, shop.platform, other, webhook_id="msg_last_month_2"),
        409,
        "conflicting-event",
    )
    assert await _move_to_last_month(app, "msg_last_month_2") == last_month
    # The conflicting one, redelivered this month, gets its stored 409; nothing more is recorded.
    assert_problem(
        await send_event(client, shop.platform, other, webhook_id="msg_last_month_2"),
        409,
        "conflicting-event",
    )
    rows = await _sql(app, "SELECT webhook_id, tableoid::regclass::text FROM webhook_deliveries ORDER BY 1")
    assert rows == [("msg_last_month", last_month), ("msg_last_month_2", last_month)]
    [(orders, entries, anomalies)] = await _sql(
        app,
        """SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM ledger_entries),
                  (SELECT count(*) FROM webhook_anomalies)""",
    )
    assert (orders, entries, anomalies) == (1, 1, 1)
    await audit_ok(client, admin)


async def test_a_payment_parked_last_month_is_applied_and_only_its_row_is_settled(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any
) -> None:
    last_month = await _months_since_last(app)
    also_parked = order_paid("M-3", merchant="shop-much-later")
    assert (
        await send_event(client, shop.platform, also_parked, webhook_id="msg_this_month")
    ).status_code == 202
    parked = order_paid("M-2", merchant="shop-later")
    assert (await send_event(client, shop.platform, parked, webhook_id="msg_parked")).status_code == 202
    assert await _move_to_last_month(app, "msg_parked") == last_month
    # Each is its partition's first row: the same ctid in two partitions.
    [(same_place,)] = await _sql(
        app, "SELECT count(DISTINCT ctid) = 1 AND count(DISTINCT tableoid) = 2 FROM webhook_deliveries"
    )
    assert same_place

    await create_merchant(client, admin, platform_id=shop.platform["id"], external_id="shop-later")
    statuses = await _sql(app, "SELECT webhook_id, status FROM webhook_deliveries ORDER BY 1")
    assert statuses == [("msg_parked", "applied"), ("msg_this_month", "parked")]
    again = await send_event(client, shop.platform, parked, webhook_id="msg_parked")
    assert (again.status_code, again.json()) == (200, {"status": "applied"})
    await audit_ok(client, admin)


async def test_the_database_keeps_a_webhook_id_once_within_each_month(
    shop: Shop, app: Any, clock: FrozenClock
) -> None:
    """Whatever month a delivery falls in — the rows from before the conversion, a month the migration made, one
    the daily job made, the default partition — a second row for its webhook id that month is refused, whatever
    its time: the inbox's claim (`ON CONFLICT DO NOTHING`) writes nothing, a plain insert fails."""
    this_month = month_start(clock.now())
    async with app.state.sessionmaker() as session:
        made = await ensure_months_ahead(session, INBOX, now=add_months(this_month, 6))
        await session.commit()
        by_job = next(p for p in await partitions(session, INBOX) if p.name == made[0])
    assert len(made) > 1 and by_job.lower is not None  # months beyond the migration's, made as the job does
    await _sql(app, f"ALTER TABLE {INBOX} DETACH PARTITION {made[-1]}")  # its month now falls in the default
    places = {
        f"{INBOX}_history": clock.now(),
        partition_name(INBOX, add_months(this_month, 3)): add_months(this_month, 3),
        made[0]: by_job.lower,
        f"{INBOX}_default": add_months(this_month, 9),
    }
    insert = """INSERT INTO webhook_deliveries (platform_id, webhook_id, received_at, body, status)
                VALUES (:p, :w, :at, '\\x7b7d', 'applied')"""
    for partition, first in places.items():
        webhook_id = f"msg_{partition}"
        await _sql(app, insert + " RETURNING 1", p=shop.platform["id"], w=webhook_id, at=first)
        later = first + timedelta(days=1)
        claimed = await _sql(
            app, insert + " ON CONFLICT DO NOTHING RETURNING 1", p=shop.platform["id"], w=webhook_id, at=later
        )
        assert claimed == [], partition
        with pytest.raises(IntegrityError):
            await _sql(app, insert, p=shop.platform["id"], w=webhook_id, at=later)
        [(where,)] = await _sql(
            app, "SELECT tableoid::regclass::text FROM webhook_deliveries WHERE webhook_id = :w", w=webhook_id
        )
        assert where == partition


def test_webhook_ids_are_locked_only_near_the_start_of_a_month() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    for moment in (start, start - timedelta(minutes=9), start + timedelta(minutes=9, seconds=59)):
        assert near_month_start(moment)
    for moment in (start - timedelta(minutes=11), start + timedelta(minutes=11), start + timedelta(days=14)):
        assert not near_month_start(moment)


async def test_retention_drops_months_and_waits_for_a_parked_delivery(
    client: httpx.AsyncClient, admin: dict[str, str], shop: Shop, app: Any, clock: FrozenClock
) -> None:
    this_month = month_start(clock.now())
    month_2, month_3 = add_months(this_month, 2), add_months(this_month, 3)
    for webhook_id, received_at, status in (
        ("now_settled", clock.now(), "applied"),  # in the migration's first partition
        ("m2_settled", month_2 + timedelta(days=1), "applied"),
        ("m2_parked", month_2 + timedelta(days=2), "parked"),
        ("m3_settled", month_3 + timedelta(days=1), "duplicate"),
    ):
        await _sql(
            app,
            """INSERT INTO webhook_deliveries (platform_id, webhook_id, received_at, body, status)
                VALUES (:p, :w, :at, '\\x7b7d', :s)""",
            p=shop.platform["id"],
            w=webhook_id,
            at=received_at,
            s=status,
        )
    await run_task(app, "donations.sweep_inbox")
    assert len(await _sql(app, "SELECT 1 FROM webhook_deliveries")) == 4

    # Five months on (retention 30 days): the months that ended before the cutoff go whole; the one holding a
    # parked delivery stays, with only that delivery.
    clock.set(add_months(this_month, 5) + timedelta(days=10))
    await run_task(app, "donations.sweep_inbox")
    rows = await _sql(app, "SELECT webhook_id, tableoid::regclass::text FROM webhook_deliveries")
    assert rows == [("m2_parked", partition_name(INBOX, month_2))]
    left = await _sql(
        app, "SELECT relname FROM pg_class WHERE relname ~ '^webhook_deliveries_([0-9_]{7}|history)$'"
    )
    assert [name for (name,) in left] == [partition_name(INBOX, month_2)]
