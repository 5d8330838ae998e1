from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Merchant


async def get(session: AsyncSession, merchant_id: str) -> Merchant | None:
    return await session.get(Merchant, merchant_id)


async def insert_unless_exists(session: AsyncSession, merchant: Merchant) -> bool:
    """Insert; False when the platform already has a merchant with this external id."""
    inserted = await session.scalar(
        insert(Merchant)
        .values(
            id=merchant.id,
            platform_id=merchant.platform_id,
            external_id=merchant.external_id,
            name=merchant.name,
            country=merchant.country,
        )
        .on_conflict_do_nothing(index_elements=[Merchant.platform_id, Merchant.external_id])
        .returning(Merchant.id)
    )
    return inserted is not None


async def list_after(
    session: AsyncSession,
    *,
    after: str | None,
    limit: int,
    platform_id: str | None = None,
    merchant_id: str | None = None,
) -> list[Merchant]:
    query = select(Merchant).order_by(Merchant.id).limit(limit)
    if after is not None:
        query = query.where(Merchant.id > after)
    if platform_id is not None:
        query = query.where(Merchant.platform_id == platform_id)
    if merchant_id is not None:
        query = query.where(Merchant.id == merchant_id)
    return list(await session.scalars(query))


async def slug_taken(session: AsyncSession, slug: str) -> bool:
    """Whether another merchant has `slug`; the slug stays locked until the transaction ends, so two merchants
    of the same name opting in at once don't both take it (one would meet the unique index: a 500)."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext("merchant-slug:" + slug))))
    return await session.scalar(select(Merchant.id).where(Merchant.public_slug == slug)) is not None


async def public_by_slug(session: AsyncSession, slug: str) -> Merchant | None:
    return await session.scalar(select(Merchant).where(Merchant.public_slug == slug, Merchant.public_profile))


async def names(session: AsyncSession, merchant_ids: list[str]) -> dict[str, str]:
    """Each merchant's name, by id."""
    rows = await session.execute(select(Merchant.id, Merchant.name).where(Merchant.id.in_(merchant_ids)))
    return {row[0]: row[1] for row in rows}
