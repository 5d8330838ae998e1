from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ActivityEntry, ApiKey, Merchant


async def insert_entry(session: AsyncSession, *, key_id: str | None, values: dict[str, Any]) -> None:
    """One entry, the acting key's name, role and tenant copied from its row by the same statement."""
    if key_id is None:
        await session.execute(insert(ActivityEntry).values(**values))
        return
    columns_of = ActivityEntry.__table__.c
    copied = {name: literal(value, type_=columns_of[name].type) for name, value in values.items()}
    source = select(
        *copied.values(),
        ApiKey.id,
        ApiKey.name,
        ApiKey.role,
        ApiKey.platform_id,
        ApiKey.merchant_id,
        ApiKey.logistics_partner_id,
    ).where(ApiKey.id == key_id)
    columns = [
        *copied,
        "key_id",
        "key_name",
        "key_role",
        "key_platform_id",
        "key_merchant_id",
        "key_logistics_partner_id",
    ]
    written = await session.execute(
        insert(ActivityEntry).from_select(columns, source).returning(ActivityEntry.id)
    )
    if written.first() is None:
        raise LookupError(f"no API key {key_id} to record an action of")


async def list_after(
    session: AsyncSession,
    *,
    conditions: list[ColumnElement[bool]],
    after: str | None,
    limit: int,
) -> list[ActivityEntry]:
    """Newest first: the cursor is the id of the last entry served, and the next page holds older ones."""
    query = select(ActivityEntry).where(*conditions).order_by(ActivityEntry.id.desc()).limit(limit)
    if after is not None:
        query = query.where(ActivityEntry.id < after)
    return list(await session.scalars(query))


def seen_by_merchant(merchant_id: str) -> ColumnElement[bool]:
    """A merchant's view: actions on its resources taken by its own keys or by its platform's."""
    its_platform = select(Merchant.platform_id).where(Merchant.id == merchant_id).scalar_subquery()
    return (ActivityEntry.merchant_id == merchant_id) & or_(
        ActivityEntry.key_merchant_id == merchant_id, ActivityEntry.key_platform_id == its_platform
    )


def seen_by_platform(platform_id: str) -> ColumnElement[bool]:
    """A platform's view: what its own keys did."""
    return ActivityEntry.key_platform_id == platform_id


def filtered(
    *,
    key_id: str | None,
    action: str | None,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if key_id is not None:
        conditions.append(ActivityEntry.key_id == key_id)
    if action is not None:
        conditions.append(ActivityEntry.action == action)
    if resource_type is not None:
        conditions.append(ActivityEntry.resource_type == resource_type)
    if resource_id is not None:
        conditions.append(ActivityEntry.resource_id == resource_id)
    if since is not None:
        conditions.append(ActivityEntry.occurred_at >= since)
    if until is not None:
        conditions.append(ActivityEntry.occurred_at < until)
    return conditions
