"""Every settlement query."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import FxConversion, FxRate, Statement, StatementLine

SETTLEMENT_LOCK = 0x6734_6773_6574_746C  # one settlement run at a time, across every process


async def lock_settlement(db: asyncpg.Connection) -> None:
    await db.execute("SELECT pg_advisory_xact_lock($1)", SETTLEMENT_LOCK)


async def billable_orders(db: asyncpg.Connection, *, final_before: datetime) -> list[asyncpg.Record]:
    """Orders with something to settle, locked: final and unbilled with a net donation, or billed with
    reversals not yet credited. Locked in id order, as the order-event path locks them."""
    return list(
        await db.fetch(
            """
            SELECT o.id, o.merchant_id, o.currency, o.donation_amount, o.reversed_amount, o.settled_reversed,
                   o.statement_id, m.stripe_customer_id
            FROM orders o JOIN merchants m ON m.id = o.merchant_id
            WHERE (o.statement_id IS NULL AND o.placed_at <= $1 AND o.donation_amount > o.reversed_amount)
               OR (o.statement_id IS NOT NULL AND o.reversed_amount > o.settled_reversed)
            ORDER BY o.id
            FOR UPDATE OF o
            """,
            final_before,
        )
    )


async def insert_statement_lines(db: asyncpg.Connection, lines: Sequence[tuple[str, str, str, int]]) -> None:
    """(statement id, order id, kind, amount)."""
    if lines:
        await db.execute(
            """
            INSERT INTO statement_lines (statement_id, order_id, kind, amount)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
            """,
            *[[line[i] for line in lines] for i in range(4)],
        )


async def mark_orders_settled(db: asyncpg.Connection, rows: Sequence[tuple[str, str, int]]) -> None:
    """(order id, statement id, reversed amount now accounted for)."""
    if rows:
        await db.execute(
            """
            UPDATE orders o SET statement_id = COALESCE(o.statement_id, u.s), settled_reversed = u.r
            FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(id, s, r) WHERE o.id = u.id
            """,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
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
        select(Statement.id).where(Statement.status != "paid").order_by(Statement.created_at, Statement.id)
    )
    return list(rows)


async def statement_lines(session: AsyncSession, statement_id: str) -> list[StatementLine]:
    return list(
        await session.scalars(
            select(StatementLine).where(StatementLine.statement_id == statement_id).order_by(StatementLine.id)
        )
    )


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
