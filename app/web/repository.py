"""Every query of the web pages: dashboard sessions and the short lists a dashboard shows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, Merchant, Order, Statement, StatementLine, WebSession


async def live_merchant_key(session: AsyncSession, token_hash: bytes) -> ApiKey | None:
    """An unrevoked merchant API key with this token hash."""
    return await session.scalar(
        select(ApiKey).where(
            ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None), ApiKey.role == "merchant"
        )
    )


async def add_session(session: AsyncSession, web_session: WebSession) -> None:
    session.add(web_session)
    await session.flush()


async def live_session(
    session: AsyncSession, token_hash: bytes, now: datetime
) -> tuple[WebSession, Merchant] | None:
    """The unexpired session with this token hash whose API key is still unrevoked, and its merchant."""
    row = (
        await session.execute(
            select(WebSession, Merchant)
            .join(ApiKey, ApiKey.id == WebSession.api_key_id)
            .join(Merchant, Merchant.id == WebSession.merchant_id)
            .where(
                WebSession.token_hash == token_hash,
                WebSession.expires_at > now,
                ApiKey.revoked_at.is_(None),
            )
        )
    ).first()
    return (row[0], row[1]) if row else None


async def end_session(session: AsyncSession, token_hash: bytes) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))


async def end_expired_sessions(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(WebSession).where(WebSession.expires_at <= now))


async def latest_orders(
    session: AsyncSession, merchant_id: str, *, before: str | None, limit: int
) -> list[tuple[Order, str | None]]:
    """A merchant's orders, newest placed first, with the status of the statement that billed each (if any).
    `before`: an order id (the last one of the previous page); only orders after it in this order are read."""
    query = (
        select(Order, Statement.status)
        .outerjoin(Statement, Statement.id == Order.statement_id)
        .where(Order.merchant_id == merchant_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(limit)
    )
    if before is not None:
        cursor = (
            await session.execute(
                select(Order.placed_at, Order.id).where(Order.id == before, Order.merchant_id == merchant_id)
            )
        ).first()
        if cursor is None:
            return []
        query = query.where(tuple_(Order.placed_at, Order.id) < tuple_(cursor[0], cursor[1]))
    rows = await session.execute(query)
    return [(row[0], row[1]) for row in rows]


async def merchant_order(
    session: AsyncSession, merchant_id: str, order_id: str
) -> tuple[Order, Merchant, str | None] | None:
    """One of this merchant's orders (by this service's id), its merchant and its statement's status."""
    row = (
        await session.execute(
            select(Order, Merchant, Statement.status)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Statement, Statement.id == Order.statement_id)
            .where(Order.id == order_id, Order.merchant_id == merchant_id)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def merchant_statement(session: AsyncSession, merchant_id: str, statement_id: str) -> Statement | None:
    return await session.scalar(
        select(Statement).where(Statement.id == statement_id, Statement.merchant_id == merchant_id)
    )


async def latest_statements(session: AsyncSession, merchant_id: str, *, limit: int) -> list[Statement]:
    return list(
        await session.scalars(
            select(Statement)
            .where(Statement.merchant_id == merchant_id)
            .order_by(Statement.id.desc())
            .limit(limit)
        )
    )


async def statement_line_orders(session: AsyncSession, statement_id: str) -> list[str]:
    """This service's id of each line's order, in the order of the statement's lines."""
    return list(
        await session.scalars(
            select(StatementLine.order_id)
            .where(StatementLine.statement_id == statement_id)
            .order_by(StatementLine.id)
        )
    )
