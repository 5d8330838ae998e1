"""Every query of the field app's own: device sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiKey, LogisticsPartner, PartnerSession


async def live_partner_key(session: AsyncSession, token_hash: bytes) -> ApiKey | None:
    """An unrevoked logistics API key with this token hash."""
    return await session.scalar(
        select(ApiKey).where(
            ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None), ApiKey.role == "logistics"
        )
    )


async def add_session(session: AsyncSession, partner_session: PartnerSession) -> None:
    session.add(partner_session)
    await session.flush()


async def live_session(
    session: AsyncSession, token_hash: bytes, now: datetime
) -> tuple[PartnerSession, LogisticsPartner] | None:
    """The unexpired session with this token hash whose API key is still unrevoked, and its partner."""
    row = (
        await session.execute(
            select(PartnerSession, LogisticsPartner)
            .join(ApiKey, ApiKey.id == PartnerSession.api_key_id)
            .join(LogisticsPartner, LogisticsPartner.id == PartnerSession.logistics_partner_id)
            .where(
                PartnerSession.token_hash == token_hash,
                PartnerSession.expires_at > now,
                ApiKey.revoked_at.is_(None),
            )
        )
    ).first()
    return (row[0], row[1]) if row else None


async def end_session(session: AsyncSession, token_hash: bytes) -> None:
    await session.execute(delete(PartnerSession).where(PartnerSession.token_hash == token_hash))


async def end_expired_sessions(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(PartnerSession).where(PartnerSession.expires_at <= now))
