"""Tables partitioned by month: converted from a populated table without rewriting it, months made ahead by a
daily job, and a row no month was made for reported by the audit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import text
from ulid import ULID

from app.core.clock import FrozenClock
from app.core.migrations import alembic_config
from app.core.partitions import Partition, add_months, month_start, months_to_make
from tests.jobs import run_task

BEFORE_LEDGER = "a2bface7e19c"  # the revision before the ledger's postings were partitioned
ENTRIES = 10_000  # two postings each: 20,000 rows


def test_months_to_make_continue_from_the_last_and_reach_three_ahead() -> None:
    dec = datetime(2026, 12, 1, tzinfo=UTC)
    history = Partition("t_history", None, add_months(dec, 1))
    default = Partition("t_default", None, None)
    now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert months_to_make([history, default], now=now) == [add_months(dec, n) for n in (1, 2, 3)]
    made = [
        history,
        *(Partition(f"m{n}", add_months(dec, n), add_months(dec, n + 1)) for n in (1, 2, 3)),
        default,
    ]
    assert months_to_make(made, now=now) == []
    # A month later, one more; a job that stopped for months makes every missing one, none skipped.
    assert months_to_make(made, now=datetime(2027, 1, 1, tzinfo=UTC)) == [add_months(dec, 4)]
    assert months_to_make(made, now=datetime(2027, 6, 15, tzinfo=UTC)) == [
        add_months(dec, n) for n in range(4, 10)
    ]
    assert month_start(datetime(2027, 3, 1, 7, tzinfo=UTC)) == datetime(2027, 3, 1, tzinfo=UTC)


async def _files(db: asyncpg.Connection, *relations: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT relname, relfilenode FROM pg_class WHERE relname = ANY($1::text[])", relations
    )
    return {row["relname"]: row["relfilenode"] for row in rows}


async def test_a_populated_ledger_and_event_deliveries_are_converted_without_rewriting_a_row(
    unmigrated_url: str,
) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(unmigrated_url), BEFORE_LEDGER)
    db = await asyncpg.connect(unmigrated_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await db.execute(
            f"""INSERT INTO ledger_entries (id, cause_type, cause_id, memo, created_at)
                SELECT 'ent_' || g, 'test', 'c' || g, 'm', now() - interval '400 days' + g * interval '1 hour'
                FROM generate_series(1, {ENTRIES}) g;
                INSERT INTO ledger_postings (entry_id, account, currency, amount)
                SELECT 'ent_' || g, account, 'CNY', sign * g
                FROM generate_series(1, {ENTRIES}) g,
                     (VALUES ('merchant_m1_pledges_receivable', 1), ('pool', -1)) v(account, sign)"""  # noqa: S608
        )
        balances = await db.fetch("SELECT account, sum(amount) FROM ledger_postings GROUP BY 1 ORDER BY 1")
        files = await _files(
            db, "ledger_postings", "ix_ledger_postings_account", "ix_ledger_postings_entry_id"
        )
        last_id = await db.fetchval("SELECT max(id) FROM ledger_postings")
        deliveries = await _populate_event_deliveries(db)
        await db.execute(
            f"""INSERT INTO platforms (id, name) VALUES ('plt_1', 'Tmall');
                INSERT INTO webhook_deliveries (platform_id, webhook_id, received_at, body, status)
                SELECT 'plt_1', 'msg_' || g, now() - interval '60 days' + g * interval '1 minute', '\\x7b7d',
                       CASE WHEN g % 100 = 0 THEN 'parked' ELSE 'applied' END
                FROM generate_series(1, {ENTRIES}) g"""  # noqa: S608
        )
        inbox_file = await _files(db, "webhook_deliveries")
        event_files = await _files(db, "event_deliveries", "pk_event_deliveries", "ix_event_deliveries_due")

        await asyncio.to_thread(command.upgrade, alembic_config(unmigrated_url), "head")

        assert await db.fetchval("SELECT relkind FROM pg_class WHERE relname = 'ledger_postings'") == b"p"
        # The old table is the first partition, as it was on disk: no row copied, no index rebuilt.
        assert await _files(
            db,
            "ledger_postings_history",
            "ledger_postings_history_account_idx",
            "ledger_postings_history_entry_id_idx",
        ) == {
            "ledger_postings_history": files["ledger_postings"],
            "ledger_postings_history_account_idx": files["ix_ledger_postings_account"],
            "ledger_postings_history_entry_id_idx": files["ix_ledger_postings_entry_id"],
        }
        assert (
            await db.fetch("SELECT account, sum(amount) FROM ledger_postings GROUP BY 1 ORDER BY 1")
            == balances
        )
        assert await db.fetchval("SELECT count(*) FROM ONLY ledger_postings_history") == 2 * ENTRIES
        made = await db.fetch(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'ledger_postings'::regclass ORDER BY 1"""
        )
        this_month = month_start(datetime.now(UTC))
        assert [r["relname"] for r in made][-2:] == ["ledger_postings_default", "ledger_postings_history"]
        assert f"ledger_postings_{add_months(this_month, 3):%Y_%m}" in {r["relname"] for r in made}

        # The ledger still refuses what it refused, through the parent and through a partition named directly.
        with pytest.raises(asyncpg.PostgresError, match="does not balance"):
            await db.execute(
                "INSERT INTO ledger_postings (entry_id, account, currency, amount) VALUES ('ent_1', 'x', 'CNY', 5)"
            )
        for statement in (
            "DELETE FROM ledger_postings",
            "DELETE FROM ledger_postings_history",
            "TRUNCATE ledger_postings_default",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await db.execute(statement)
        # New postings number on from the old ones, and go to their month.
        next_month = add_months(this_month, 1)
        rows = await db.fetch(
            """INSERT INTO ledger_postings (entry_id, account, currency, amount, posted_at)
               VALUES ('ent_1', 'x', 'CNY', 5, $1), ('ent_1', 'y', 'CNY', -5, $1)
               RETURNING id, tableoid::regclass::text AS partition""",
            add_months(next_month, 1),
        )
        assert min(r["id"] for r in rows) > last_id
        assert {r["partition"] for r in rows} == {f"ledger_postings_{add_months(next_month, 1):%Y_%m}"}

        # The deliveries and their attempts: the same, partitioned together on the delivery's id.
        assert await _files(
            db,
            "event_deliveries_history",
            "event_deliveries_history_pkey",
            "event_deliveries_history_due_idx",
        ) == {
            "event_deliveries_history": event_files["event_deliveries"],
            "event_deliveries_history_pkey": event_files["pk_event_deliveries"],
            "event_deliveries_history_due_idx": event_files["ix_event_deliveries_due"],
        }
        assert await db.fetchval("SELECT count(*) FROM ONLY event_deliveries_history") == len(deliveries)
        assert await db.fetchval("SELECT count(*) FROM ONLY event_delivery_attempts_history") == len(
            deliveries
        )
        # Attempts refer to no one: a month of deliveries is detached without reading it.
        assert not await db.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = 'event_deliveries'::regclass"
        )
        event = "evt_" + str(ULID.from_timestamp(add_months(this_month, 2).timestamp()))
        await db.execute(
            "INSERT INTO events (id, type, occurred_at, data) VALUES ($1, 'order.paid', now(), '{}')", event
        )
        placed = await db.fetchval(
            """INSERT INTO event_deliveries (id, event_id, endpoint_id, status)
               VALUES ('dlv_' || substr($1, 5) || substr($2, 5), $1, $2, 'pending')
               RETURNING tableoid::regclass::text""",
            event,
            ENDPOINT,
        )
        assert placed == f"event_deliveries_{add_months(this_month, 2):%Y_%m}"

        # The inbox: the same; its key now includes the month.
        assert await _files(db, "webhook_deliveries_history") == {
            "webhook_deliveries_history": inbox_file["webhook_deliveries"]
        }
        assert await db.fetchval("SELECT count(*) FROM ONLY webhook_deliveries_history") == ENTRIES
        assert (
            await db.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'pk_webhook_deliveries'"
            )
            == "PRIMARY KEY (platform_id, webhook_id, received_at)"
        )
    finally:
        await db.close()
    await asyncio.to_thread(command.check, alembic_config(unmigrated_url))


ENDPOINT = "whe_" + str(ULID())


async def _populate_event_deliveries(db: asyncpg.Connection) -> list[str]:
    """An endpoint, and events of the last 400 days each with one delivery (half delivered) and one attempt."""
    start = datetime.now(UTC) - timedelta(days=400)
    events = [str(ULID.from_timestamp((start + timedelta(hours=n)).timestamp())) for n in range(ENTRIES // 2)]
    await db.execute(
        "INSERT INTO webhook_endpoints (id, url, events) VALUES ($1, 'https://example.org/h', ARRAY['order.paid'])",
        ENDPOINT,
    )
    await db.copy_records_to_table(
        "events",
        columns=["id", "type", "occurred_at", "data"],
        records=[(f"evt_{e}", "order.paid", start, "{}") for e in events],
    )
    deliveries = [f"dlv_{e}{ENDPOINT[4:]}" for e in events]
    await db.copy_records_to_table(
        "event_deliveries",
        columns=["id", "event_id", "endpoint_id", "status"],
        records=[
            (d, f"evt_{e}", ENDPOINT, "delivered" if n % 2 else "pending")
            for n, (d, e) in enumerate(zip(deliveries, events, strict=True))
        ],
    )
    await db.copy_records_to_table(
        "event_delivery_attempts",
        columns=["id", "delivery_id", "attempted_at", "trigger", "succeeded", "duration_ms"],
        records=[(f"att_{ULID()}", d, start, "scheduled", True, 10) for d in deliveries],
    )
    return deliveries


@pytest.fixture
def app(app_on_clock: Any) -> Any:
    return app_on_clock


async def _months(app: Any) -> list[str]:
    async with app.state.engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT relname FROM pg_class WHERE relname ~ '^ledger_postings_[0-9]{4}_[0-9]{2}$' ORDER BY 1"
            )
        )
        return list(found.scalars())


async def test_the_daily_job_makes_months_ahead_and_the_audit_reports_a_row_in_default(
    client: httpx.AsyncClient, admin: dict[str, str], app: Any, clock: FrozenClock
) -> None:
    this_month = month_start(clock.now())
    # Made by the migration: up to three months ahead, so a day's job finds nothing to do.
    made = await _months(app)
    assert made[-1] == f"ledger_postings_{add_months(this_month, 3):%Y_%m}"
    await run_task(app, "core.make_partitions")
    assert await _months(app) == made

    # Two months on, the job makes the two months that are now within three ahead.
    clock.set(add_months(this_month, 2) + timedelta(days=3))
    await run_task(app, "core.make_partitions")
    assert await _months(app) == [
        *made,
        f"ledger_postings_{add_months(this_month, 4):%Y_%m}",
        f"ledger_postings_{add_months(this_month, 5):%Y_%m}",
    ]

    # A posting dated beyond every month made falls into the default partition: the audit says so.
    far = add_months(this_month, 9)
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO ledger_entries (id, cause_type, cause_id, memo) VALUES ('ent_far', 'test', 'far', 'm')"
            )
        )
        await connection.execute(
            text(
                """INSERT INTO ledger_postings (entry_id, account, currency, amount, posted_at)
                   VALUES ('ent_far', 'x', 'CNY', 5, :far), ('ent_far', 'y', 'CNY', -5, :far)"""
            ),
            {"far": far},
        )
    report = (await client.get("/v1/audit", headers=admin)).json()
    check = next(c for c in report["checks"] if c["name"] == "partitions_made_ahead")
    assert not check["ok"] and check["examples"] == [{"table": "ledger_postings", "rows": 2}]
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["partitions_made_ahead"]
