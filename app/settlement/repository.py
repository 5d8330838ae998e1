"""Every settlement query."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FxConversion, FxRate, Order, SettlementRun, Statement, StatementLine, StripeEvent

SETTLEMENT_LOCK = 0x6734_6773_6574_746C  # one settlement run at a time, across every process


async def lock_settlement(db: asyncpg.Connection) -> None:
    await db.execute("SELECT pg_advisory_xact_lock($1)", SETTLEMENT_LOCK)


async def billable_orders(db: asyncpg.Connection, *, final_before: datetime) -> list[asyncpg.Record]:
    """Orders with something to settle, locked: final and unbilled with a net donation, or billed with
    reversals not yet credited. Locked in id order, as the order-event path locks them."""
    return list(
        await db.fetch(
            """
            SELECT o.id, o.merchant_id, o.currency, o.placed_at, o.donation_amount, o.reversed_amount,
                   o.settled_reversed, o.statement_id
            FROM orders o
            WHERE (o.statement_id IS NULL AND o.placed_at <= $1 AND o.donation_amount > o.reversed_amount)
               OR (o.statement_id IS NOT NULL AND o.reversed_amount > o.settled_reversed)
            ORDER BY o.id
            FOR UPDATE OF o
            """,
            final_before,
        )
    )


async def pending_carryovers(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """Remainders carried out of earlier statements and not billed again yet, locked."""
    return list(
        await db.fetch(
            """
            SELECT id, merchant_id, currency, amount, order_id FROM statement_carryovers
            WHERE into_statement_id IS NULL ORDER BY id FOR UPDATE
            """
        )
    )


async def billing_methods(db: asyncpg.Connection, merchant_ids: Sequence[str]) -> dict[str, str | None]:
    """How each merchant pays: `stripe` (only with a Stripe customer), `bank_transfer`, or None."""
    rows = await db.fetch(
        """
        SELECT id, CASE WHEN billing_method = 'stripe' AND stripe_customer_id IS NULL THEN NULL
                        ELSE billing_method END AS method
        FROM merchants WHERE id = ANY($1::text[])
        """,
        list(merchant_ids),
    )
    return {r["id"]: r["method"] for r in rows}


@dataclass
class StatementWrites:
    """Everything a run writes beside the statements themselves, written set-based at the end."""

    lines: list[tuple[str, str, str, int]] = field(default_factory=list)  # statement, order, kind, amount
    settled: list[tuple[str, str, int]] = field(
        default_factory=list
    )  # order, statement, reversed now settled
    carried_into: list[tuple[str, str]] = field(default_factory=list)  # carryover, statement
    carried_out: list[tuple[str, str, str, int, str, str]] = field(default_factory=list)


async def write_statements(db: asyncpg.Connection, writes: StatementWrites) -> None:
    if writes.lines:
        await db.execute(
            """
            INSERT INTO statement_lines (statement_id, order_id, kind, amount)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
            """,
            *[[line[i] for line in writes.lines] for i in range(4)],
        )
    if writes.settled:
        await db.execute(
            """
            UPDATE orders o SET statement_id = COALESCE(o.statement_id, u.s), settled_reversed = u.r
            FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, s, r) WHERE o.id = u.id
            """,
            *[[row[i] for row in writes.settled] for i in range(3)],
        )
    if writes.carried_into:
        await db.execute(
            """
            UPDATE statement_carryovers c SET into_statement_id = u.s
            FROM unnest($1::text[], $2::text[]) AS u(id, s) WHERE c.id = u.id
            """,
            *[[row[i] for row in writes.carried_into] for i in range(2)],
        )
    if writes.carried_out:
        await db.execute(
            """
            INSERT INTO statement_carryovers (id, merchant_id, currency, amount, order_id, from_statement_id)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
            """,
            *[[row[i] for row in writes.carried_out] for i in range(6)],
        )


async def statement_for_update(session: AsyncSession, statement_id: str) -> Statement | None:
    """The statement, row-locked and re-read: an instance the session loaded before the lock was granted would
    otherwise keep its stale values (and e.g. record a payment twice)."""
    return await session.scalar(
        select(Statement)
        .where(Statement.id == statement_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def lock_currency_conversion(db: asyncpg.Connection, currency: str) -> None:
    """Setting a rate and recording a payment in that currency take turns, so a payment recorded while a rate
    is set is either converted by the rate-setter or sees the new rate itself."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtextextended('fx:' || $1, 0))", currency)


async def statements_to_charge(session: AsyncSession) -> list[str]:
    rows = await session.scalars(
        select(Statement.id)
        .where(
            Statement.billing_method == "stripe", Statement.status.in_(("pending_payment", "payment_failed"))
        )
        .order_by(Statement.created_at, Statement.id)
    )
    return list(rows)


async def statements_in_flight(session: AsyncSession) -> list[str]:
    """Stripe statements with a charge attempt sent and no final outcome yet."""
    rows = await session.scalars(
        select(Statement.id)
        .where(
            Statement.billing_method == "stripe",
            Statement.status == "pending_payment",
            Statement.payment_attempts > 0,
        )
        .order_by(Statement.created_at, Statement.id)
    )
    return list(rows)


async def statement_lines(session: AsyncSession, statement_id: str) -> list[tuple[str, str, int]]:
    """(the platform's order id, kind, amount) of each line, in order."""
    rows = await session.execute(
        select(Order.external_id, StatementLine.kind, StatementLine.amount)
        .join(Order, Order.id == StatementLine.order_id)
        .where(StatementLine.statement_id == statement_id)
        .order_by(StatementLine.id)
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def statements(
    session: AsyncSession, *, status: str | None, anomalous: bool, after: str | None, limit: int
) -> list[Statement]:
    query = select(Statement).order_by(Statement.id).limit(limit)
    if status is not None:
        query = query.where(Statement.status == status)
    if anomalous:
        query = query.where(Statement.anomaly.is_not(None))
    if after is not None:
        query = query.where(Statement.id > after)
    return list(await session.scalars(query))


async def claim_stripe_event(session: AsyncSession, event_id: str, kind: str, body: bytes) -> bool:
    """The Stripe inbox: False if this event id was received before (then it changes nothing)."""
    inserted = await session.scalar(
        insert(StripeEvent)
        .values(id=event_id, type=kind, payload=json.loads(body), outcome="processing")
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id)
    )
    return inserted is not None


async def set_stripe_event_outcome(session: AsyncSession, event_id: str, outcome: str) -> None:
    await session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(outcome=outcome[:100]))


async def merchant_statements(
    session: AsyncSession, merchant_id: str, *, after: str | None, limit: int
) -> list[Statement]:
    query = select(Statement).where(Statement.merchant_id == merchant_id).order_by(Statement.id).limit(limit)
    if after is not None:
        query = query.where(Statement.id > after)
    return list(await session.scalars(query))


async def latest_rate(session: AsyncSession, currency: str, base_currency: str) -> FxRate | None:
    return await session.scalar(
        select(FxRate)
        .where(FxRate.currency == currency, FxRate.base_currency == base_currency)
        .order_by(FxRate.created_at.desc(), FxRate.id.desc())
        .limit(1)
    )


async def rates_newest_first(session: AsyncSession, *, after: str | None, limit: int) -> list[FxRate]:
    query = select(FxRate).order_by(FxRate.id.desc()).limit(limit)
    if after is not None:
        query = query.where(FxRate.id < after)
    return list(await session.scalars(query))


async def paid_unconverted(session: AsyncSession, currency: str) -> list[Statement]:
    return list(
        await session.scalars(
            select(Statement)
            .where(
                Statement.status == "paid",
                Statement.currency == currency,
                ~Statement.id.in_(select(FxConversion.statement_id)),
            )
            .order_by(Statement.paid_at, Statement.id)
            .with_for_update()
        )
    )


async def run_for_update(session: AsyncSession, run_id: str) -> SettlementRun | None:
    return await session.scalar(
        select(SettlementRun)
        .where(SettlementRun.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def run_statements(session: AsyncSession, run_id: str) -> list[Statement]:
    return list(
        await session.scalars(select(Statement).where(Statement.run_id == run_id).order_by(Statement.id))
    )


async def runs_page(session: AsyncSession, *, after: str | None, limit: int) -> list[SettlementRun]:
    query = select(SettlementRun).order_by(SettlementRun.id.desc()).limit(limit)
    if after is not None:
        query = query.where(SettlementRun.id < after)
    return list(await session.scalars(query))
