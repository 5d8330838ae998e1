"""The public report's rollups equal a recomputation from every order, whatever happened between two catch-ups:
orders recorded (some right at the pledged/final boundary), refunded, cancelled, billed, paid and converted at
random, some by transactions that were already running when a catch-up took its snapshot and commit only after it
(the case a watermark on a sequence gets wrong)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.core.database import asyncpg_url
from app.reports import rollups
from app.reports.service import compute_transparency

NOW = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)
WINDOW = timedelta(days=30)
CURRENCIES = {"mer_a": "CNY", "mer_b": "USD", "mer_c": "IDR", "mer_d": "USD"}
# Each step changes only rows no other transaction holds (its SELECTs are FOR UPDATE SKIP LOCKED): the test's
# "late" transaction stays open while the others run, from the same task, so waiting for one of its rows would
# wait forever. (It also locks the rows its rows point to, a refund its order, a conversion its statement: FOR
# UPDATE skips those as well.) Should a step wait all the same, it fails instead of hanging.
NO_WAITING = {"lock_timeout": "5s", "statement_timeout": "60s"}


class Programme:
    """Random changes made the way the service makes them (each in one transaction, with the columns and
    totals the service keeps), straight in SQL."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.count = 0
        self.now = NOW  # the test's clock, which the catch-ups read

    def next_id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count:06d}"

    async def record_orders(self, db: asyncpg.Connection) -> None:
        rows = []
        for _ in range(self.rng.randint(1, 6)):
            merchant = self.rng.choice(sorted(CURRENCIES))
            donation = self.rng.choice([0, 0, 5, 120, 300, 999])
            reversed_ = self.rng.choice([0, 0, 0, donation, donation // 3])
            placed = self.rng.choice(
                [
                    NOW - timedelta(minutes=self.rng.randint(0, 90 * 24 * 60)),
                    # Around the boundaries the figures are split at: the return window's, and the audit's (now).
                    self.now - WINDOW + timedelta(minutes=self.rng.randint(-70, 70)),
                    self.now - WINDOW,
                    self.now - timedelta(minutes=self.rng.randint(0, 70)),
                ]
            )
            rows.append((self.next_id("ord"), merchant, CURRENCIES[merchant], placed, donation, reversed_))
        await db.executemany(
            """INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items,
                                   base_amount, donation_amount, refunded_amount, reversed_amount, content_hash)
               VALUES ($1, 'plt_r', $1, $2, $3, $4, '[]', 10000, $5, $6, $6, '\\x00')""",
            rows,
        )

    async def refund(self, db: asyncpg.Connection) -> None:
        found = await db.fetch(
            "SELECT id, currency, donation_amount - reversed_amount AS left FROM orders WHERE donation_amount > "
            "reversed_amount ORDER BY id FOR UPDATE SKIP LOCKED"
        )
        if not found:
            return
        order = self.rng.choice(found)
        part = self.rng.choice([order["left"], max(1, order["left"] // 2)])
        await db.execute(
            """INSERT INTO order_refunds (id, order_id, refund_id, amount, currency, reversed_amount, content_hash)
               VALUES ($1, $2, $1, $3, $4, $3, '\\x00')""",
            self.next_id("ref"),
            order["id"],
            part,
            order["currency"],
        )
        await db.execute(
            "UPDATE orders SET reversed_amount = reversed_amount + $2, refunded_amount = refunded_amount + $2 "
            "WHERE id = $1",
            order["id"],
            part,
        )

    async def cancel(self, db: asyncpg.Connection) -> None:
        """As a cancellation is applied: all of the donation reversed, no refund row. Half the time an order
        already refunded in part; an order cancelled before changes nothing."""
        found = await db.fetch(
            "SELECT id, reversed_amount > 0 AS refunded FROM orders WHERE donation_amount > 0 ORDER BY id "
            "FOR UPDATE SKIP LOCKED"
        )
        if not found:
            return
        refunded = [o for o in found if o["refunded"]]
        order = self.rng.choice(refunded if refunded and self.rng.random() < 0.5 else found)
        await db.execute(
            "UPDATE orders SET reversed_amount = donation_amount, cancelled_at = coalesce(cancelled_at, now()) "
            "WHERE id = $1",
            order["id"],
        )

    async def refund_cancelled(self, db: asyncpg.Connection) -> None:
        """A refund of a cancelled order: recorded, it reverses nothing more (its total is written unchanged)."""
        found = await db.fetch(
            "SELECT id, currency FROM orders WHERE cancelled_at IS NOT NULL AND donation_amount > 0 ORDER BY id "
            "FOR UPDATE SKIP LOCKED"
        )
        if not found:
            return
        order = self.rng.choice(found)
        await db.execute(
            """INSERT INTO order_refunds (id, order_id, refund_id, amount, currency, reversed_amount, content_hash)
               VALUES ($1, $2, $1, 100, $3, 0, '\\x00')""",
            self.next_id("ref"),
            order["id"],
            order["currency"],
        )
        await db.execute(
            "UPDATE orders SET reversed_amount = donation_amount, refunded_amount = refunded_amount + 100 "
            "WHERE id = $1",
            order["id"],
        )

    async def refund_then_cancel(self, db: asyncpg.Connection) -> None:
        """A refund and a cancellation of one order in one transaction (one batch of webhooks)."""
        await self.refund(db)
        await self.cancel(db)

    async def bill(self, db: asyncpg.Connection) -> None:
        merchant = self.rng.choice(sorted(CURRENCIES))
        orders = await db.fetch(
            "SELECT id FROM orders WHERE merchant_id = $1 AND statement_id IS NULL AND donation_amount > "
            "reversed_amount AND placed_at <= $2 ORDER BY id FOR UPDATE SKIP LOCKED",
            merchant,
            NOW - WINDOW + timedelta(days=self.rng.randint(0, 20)),
        )
        if not orders:
            return
        statement = self.next_id("stm")
        await db.execute(
            """INSERT INTO statements (id, run_id, merchant_id, currency, as_of, total, billing_method, status,
                                       payment_attempts)
               VALUES ($1, 'stl_r', $2, $3, $4, 1, 'bank_transfer', 'pending_payment', 0)""",
            statement,
            merchant,
            CURRENCIES[merchant],
            NOW,
        )
        await db.execute(
            "UPDATE orders SET statement_id = $1, settled_reversed = reversed_amount WHERE id = ANY($2::text[])",
            statement,
            [o["id"] for o in orders],
        )

    async def pay(self, db: asyncpg.Connection) -> None:
        unpaid = await db.fetch(
            "SELECT id FROM statements WHERE status <> 'paid' ORDER BY id FOR UPDATE SKIP LOCKED"
        )
        if unpaid:
            status = self.rng.choice(["paid", "paid", "payment_failed"])
            await db.execute(
                "UPDATE statements SET status = $2 WHERE id = $1", self.rng.choice(unpaid)["id"], status
            )

    async def convert(self, db: asyncpg.Connection) -> None:
        paid = await db.fetch(
            """SELECT s.id, s.currency FROM statements s LEFT JOIN fx_conversions c ON c.statement_id = s.id
               WHERE s.status = 'paid' AND c.id IS NULL ORDER BY s.id FOR UPDATE OF s SKIP LOCKED"""
        )
        if paid:
            statement = self.rng.choice(paid)
            await db.execute(
                """INSERT INTO fx_conversions (id, statement_id, currency, amount, base_currency, base_amount,
                                               rounding_difference)
                   VALUES ($1, $2, $3, 1, 'USD', 1, '0')""",
                self.next_id("fxc"),
                statement["id"],
                statement["currency"],
            )

    async def change(self, db: asyncpg.Connection) -> None:
        step = self.rng.choice(
            [self.record_orders] * 3
            + [self.refund] * 2
            + [self.cancel, self.refund_cancelled, self.refund_then_cancel]
            + [self.bill, self.pay, self.convert]
        )
        await step(db)


async def _catch_up_and_compare(sessions: object, now: datetime) -> None:
    async with AsyncSession(sessions) as session:  # type: ignore[arg-type]
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        await rollups.catch_up(session, now)
        assert await rollups.mismatches(session, now) == []
        kept = await compute_transparency(session, now=now, window=WINDOW, base_currency="USD")
        recomputed = await compute_transparency(
            session, now=now, window=WINDOW, base_currency="USD", from_orders=True
        )
        assert kept == recomputed
        await session.commit()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_rollups_equal_a_recomputation_through_out_of_order_commits(
    database_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    programme = Programme(rng)
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    db = await asyncpg.connect(dsn, server_settings=NO_WAITING)
    late = await asyncpg.connect(dsn, server_settings=NO_WAITING)
    engine = create_async_engine(asyncpg_url(database_url), connect_args={"server_settings": NO_WAITING})
    try:
        await db.execute(
            """INSERT INTO platforms (id, name) VALUES ('plt_r', 'R');
               INSERT INTO settlement_runs (id, as_of, summary) VALUES ('stl_r', now(), '{}')"""
        )
        await db.executemany(
            """INSERT INTO merchants (id, platform_id, external_id, name, country, billing_method)
               VALUES ($1, 'plt_r', $1, $1, 'ID', 'bank_transfer')""",
            [(m,) for m in CURRENCIES],
        )
        # Orders recorded before the rollups' first catch-up are counted by its full rebuild, those recorded
        # before the migration (no transaction id) included.
        for _ in range(5):
            await programme.record_orders(db)
        await db.execute("UPDATE orders SET recorded_xid = NULL WHERE id <= 'ord_000010'")
        now = NOW
        late_open = False
        for _ in range(40):
            roll = rng.random()
            if roll < 0.15 and not late_open:
                # A transaction that has written (so it has its id) before the next catch-up's snapshot and
                # commits after it, while later transactions commit before it.
                late_tx = late.transaction()
                await late_tx.start()
                await programme.change(late)
                late_open = True
            elif roll < 0.3 and late_open:
                await late_tx.commit()
                late_open = False
            elif roll < 0.5:
                now += timedelta(minutes=rng.choice([1, 30, 90, 60 * 24]))
                programme.now = now
                await _catch_up_and_compare(engine, now)
            else:
                async with db.transaction():
                    await programme.change(db)
        if late_open:
            await late_tx.commit()
        await _catch_up_and_compare(engine, now)
        assert await db.fetchval("SELECT count(*) FROM report_unbilled_cells") > 0
        assert await db.fetchval("SELECT count(*) FROM orders WHERE cancelled_at IS NOT NULL") > 0
        assert await db.fetchval("SELECT count(*) FROM report_order_changes") == 0  # all folded in
    finally:
        await db.close()
        await late.close()
        await engine.dispose()
