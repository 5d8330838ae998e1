"""Merchants: sellers a platform registers, the tenants of donation rules and statements."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.database import driver_connection
from app.core.errors import AlreadyExists, NotFound
from app.core.ids import new_id
from app.donations import ingest
from app.merchants import repository
from app.models import Merchant
from app.platforms import service as platforms


async def register_merchant(
    session: AsyncSession, *, platform_id: str, external_id: str, name: str, country: str, now: datetime
) -> Merchant:
    """Register a merchant on a platform; its `external_id` is unique on that platform. Order events parked
    because the merchant was unknown are applied in the same transaction."""
    await platforms.get_platform(session, platform_id)
    db = await driver_connection(session)
    await ingest.lock_merchant(db, platform_id, external_id)
    merchant = Merchant(
        id=new_id("mer"), platform_id=platform_id, external_id=external_id, name=name, country=country
    )
    if not await repository.insert_unless_exists(session, merchant):
        raise AlreadyExists(
            f"Platform {platform_id} already has a merchant with external_id {external_id!r}.",
            external_id=external_id,
        )
    await ingest.apply_parked_for_merchant(db, platform_id, external_id, now=now)
    registered = await repository.get(session, merchant.id)
    assert registered is not None
    return registered


def can_see(principal: Principal, merchant: Merchant) -> bool:
    """The operator, the merchant's platform and the merchant itself see a merchant; nobody else does."""
    return (
        principal.is_admin
        or (principal.platform_id is not None and principal.platform_id == merchant.platform_id)
        or principal.merchant_id == merchant.id
    )


async def get_visible_merchant(session: AsyncSession, principal: Principal, merchant_id: str) -> Merchant:
    merchant = await repository.get(session, merchant_id)
    if merchant is None or not can_see(principal, merchant):
        raise NotFound(f"No merchant {merchant_id}.")
    return merchant


def _slug_of(name: str) -> str:
    """ASCII words of the name joined by dashes ("Tea House" → "tea-house"); empty for a name with none."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60].strip("-")


async def set_public_profile(session: AsyncSession, merchant: Merchant, public: bool) -> Merchant:
    """Opt the merchant in or out of its public profile. Its page's slug is made at the first opt-in (from its
    name, or its id when the name has no Latin letters, made unique with the id's tail) and kept after."""
    if public and merchant.public_slug is None:
        tail = merchant.id[-6:].lower()
        slug = _slug_of(merchant.name) or f"shop-{tail}"
        if await repository.slug_taken(session, slug):
            slug = f"{slug}-{tail}"
        merchant.public_slug = slug
    merchant.public_profile = public
    await session.flush()
    return merchant


async def get_public_merchant(session: AsyncSession, merchant_id: str) -> Merchant:
    """A merchant that opted in to a public profile; any other is as unknown as a missing one."""
    merchant = await repository.get(session, merchant_id)
    if merchant is None or not merchant.public_profile:
        raise NotFound(f"No public profile for merchant {merchant_id}.")
    return merchant
