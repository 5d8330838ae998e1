from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Platform, PlatformWebhookSecret


async def get(session: AsyncSession, platform_id: str) -> Platform | None:
    return await session.get(Platform, platform_id)


async def list_after(session: AsyncSession, *, after: str | None, limit: int) -> list[Platform]:
    query = select(Platform).order_by(Platform.id).limit(limit)
    if after is not None:
        query = query.where(Platform.id > after)
    return list(await session.scalars(query))


async def expire_current_secrets(session: AsyncSession, platform_id: str, *, at: datetime) -> None:
    await session.execute(
        update(PlatformWebhookSecret)
        .where(
            PlatformWebhookSecret.platform_id == platform_id,
            or_(PlatformWebhookSecret.expires_at.is_(None), PlatformWebhookSecret.expires_at > at),
        )
        .values(expires_at=at)
    )


async def valid_secrets(
    session: AsyncSession, platform_id: str, *, now: datetime
) -> list[PlatformWebhookSecret]:
    query = (
        select(PlatformWebhookSecret)
        .where(
            PlatformWebhookSecret.platform_id == platform_id,
            or_(PlatformWebhookSecret.expires_at.is_(None), PlatformWebhookSecret.expires_at > now),
        )
        .order_by(PlatformWebhookSecret.id.desc())
    )
    return list(await session.scalars(query))
