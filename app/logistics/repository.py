from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import LogisticsPartner


async def get(session: AsyncSession, partner_id: str) -> LogisticsPartner | None:
    return await session.get(LogisticsPartner, partner_id)


async def list_after(session: AsyncSession, *, after: str | None, limit: int) -> list[LogisticsPartner]:
    query = select(LogisticsPartner).order_by(LogisticsPartner.id).limit(limit)
    if after is not None:
        query = query.where(LogisticsPartner.id > after)
    return list(await session.scalars(query))
