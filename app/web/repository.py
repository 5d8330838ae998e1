"""Every query of the web pages: dashboard sessions and the short lists a dashboard shows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, Merchant, Order, Statement, WebSession


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
    session: AsyncSession, merchant_id: str, *, limit: int
) -> list[tuple[Order, str | None]]:
    """A merchant's newest orders with the status of the statement that billed each (if any)."""
    rows = await session.execute(
        select(Order, Statement.status)
        .outerjoin(Statement, Statement.id == Order.statement_id)
        .where(Order.merchant_id == merchant_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in rows]


async def latest_statements(session: AsyncSession, merchant_id: str, *, limit: int) -> list[Statement]:
    return list(
        await session.scalars(
            select(Statement)
            .where(Statement.merchant_id == merchant_id)
            .order_by(Statement.id.desc())
            .limit(limit)
        )
    )
