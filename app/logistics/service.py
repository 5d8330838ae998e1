"""Logistics partners: the carriers that take Love Packages to schools."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.ids import new_id
from app.logistics import repository
from app.models import LogisticsPartner


async def create_partner(session: AsyncSession, *, name: str) -> LogisticsPartner:
    partner = LogisticsPartner(id=new_id("lgp"), name=name)
    session.add(partner)
    await session.flush()
    await session.refresh(partner)
    return partner


async def get_partner(session: AsyncSession, partner_id: str) -> LogisticsPartner:
    partner = await repository.get(session, partner_id)
    if partner is None:
        raise NotFound(f"No logistics partner {partner_id}.")
    return partner
