from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey


async def get(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


async def list_after(session: AsyncSession, *, after: str | None, limit: int) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id).limit(limit)
    if after is not None:
        query = query.where(ApiKey.id > after)
    return list(await session.scalars(query))


async def revoke(session: AsyncSession, key_id: str, *, at: datetime) -> None:
    await session.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=at)
    )
