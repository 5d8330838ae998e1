"""Every query of receipt links and of what a receipt shows."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Order, ReceiptLink


async def order_of_platform(session: AsyncSession, platform_id: str, external_id: str) -> Order | None:
    """The platform's order, locked: its links are made and revoked one request at a time."""
    return await session.scalar(
        select(Order)
        .where(Order.platform_id == platform_id, Order.external_id == external_id)
        .with_for_update()
    )


async def links_of(session: AsyncSession, order_id: str) -> list[ReceiptLink]:
    """The order's links, newest first (usually one: a second only after the lookup key was replaced)."""
    query = select(ReceiptLink).where(ReceiptLink.order_id == order_id).order_by(ReceiptLink.id.desc())
    return list(await session.scalars(query))


async def delete_links(session: AsyncSession, order_id: str) -> int:
    result = await session.execute(delete(ReceiptLink).where(ReceiptLink.order_id == order_id))
    return int(result.rowcount)  # type: ignore[attr-defined]


# The order behind a link, in one statement (one snapshot): its donation, what was reversed and when, its merchant,
# whether it was billed and when paid, what reached the pool, and `packages`: the packages its money went into
# (from the funding lineage), its share of each, and where and how far each got — grade, country and region
# (never a school or a student), with the date of each step — as rows of (share, cost, currency, grade, status,
# country, region, allocated_at, shipped_at, delivered_at, receipt_confirmed_at). Packages of a cancelled
# shipment are left out, as in the order's trail: their money funds others.
_FACTS = """
SELECT o.id, o.platform_id, o.external_id, o.currency, o.placed_at, o.donation_amount, o.reversed_amount,
       o.cancelled_at, o.statement_id IS NOT NULL AS billed, l.id AS link_id, l.notified_step, l.show_merchant,
       l.order_reference, m.name AS merchant_name, s.paid_at,
       (SELECT max(r.created_at) FROM order_refunds r
         WHERE r.order_id = o.id AND r.reversed_amount > 0) AS refunded_at,
       (SELECT sum(f.amount) FROM funding_sources f
         WHERE f.order_id = o.id AND f.kind = 'collected') AS pooled_amount,
       (SELECT min(f.currency) FROM funding_sources f
         WHERE f.order_id = o.id AND f.kind = 'collected') AS pooled_currency,
       ARRAY(
         SELECT ROW(sum(f.amount), k.cost, k.currency, k.grade, k.status, sc.country, sc.region, k.created_at,
                    (SELECT min(e.occurred_at) FROM shipment_events e
                      WHERE e.shipment_id = k.shipment_id AND e.result = 'applied' AND e.status = 'handed_over'),
                    k.delivered_at, k.receipt_confirmed_at)
         FROM package_funding f JOIN love_packages k ON k.id = f.package_id
         LEFT JOIN schools sc ON sc.id = k.school_id
         WHERE f.order_id = o.id AND k.status <> 'cancelled'
         GROUP BY k.id, sc.country, sc.region
         ORDER BY k.created_at, k.id
       ) AS packages
FROM receipt_links l
JOIN orders o ON o.id = l.order_id
JOIN merchants m ON m.id = o.merchant_id
LEFT JOIN statements s ON s.id = o.statement_id
"""


async def receipt_facts(db: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """What a receipt shows, found by its token's hash."""
    return await db.fetchrow(_FACTS + "WHERE l.token_hash = $1", token_hash)


async def link_is_live(db: asyncpg.Connection, token_hash: bytes) -> bool:
    return bool(
        await db.fetchval("SELECT EXISTS (SELECT FROM receipt_links WHERE token_hash = $1)", token_hash)
    )


async def linked_facts(db: asyncpg.Connection, order_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The same for every link of these orders (those without a link are left out)."""
    return list(await db.fetch(_FACTS + "WHERE l.order_id = ANY($1::text[]) ORDER BY l.id", list(order_ids)))


async def orders_with_links(db: asyncpg.Connection, order_ids: Sequence[str]) -> list[str]:
    rows = await db.fetch(
        "SELECT DISTINCT order_id FROM receipt_links WHERE order_id = ANY($1::text[])", list(order_ids)
    )
    return [row["order_id"] for row in rows]


async def orders_in_packages(db: asyncpg.Connection, package_ids: Sequence[str]) -> list[str]:
    """The orders whose money is in these packages (from the funding lineage) and that have a receipt link."""
    rows = await db.fetch(
        """SELECT DISTINCT f.order_id FROM package_funding f
           WHERE f.package_id = ANY($1::text[])
             AND EXISTS (SELECT 1 FROM receipt_links l WHERE l.order_id = f.order_id)""",
        list(package_ids),
    )
    return [row["order_id"] for row in rows]


async def set_notified_steps(db: asyncpg.Connection, steps: Sequence[tuple[str, str]]) -> None:
    await db.execute(
        """UPDATE receipt_links l SET notified_step = u.step
           FROM unnest($1::text[], $2::text[]) AS u(id, step) WHERE l.id = u.id""",
        [link_id for link_id, _ in steps],
        [step for _, step in steps],
    )
