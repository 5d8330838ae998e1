"""Every query of receipt links and of what a receipt shows."""

from __future__ import annotations

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


async def receipt_facts(db: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """The order behind a link, in one statement (one snapshot): its donation, what was reversed and when, its
    merchant, the statement that billed it, what reached the pool, and `packages`: the packages its money went
    into (from the funding lineage), its share of each, and where and how far each got — grade, country and
    region (never a school or a student), with the date of each step, as rows of
    (share, cost, currency, grade, status, country, region, allocated_at, shipped_at, delivered_at,
    receipt_confirmed_at). Packages of a cancelled shipment are left out, as in the order's trail: their money
    funds others."""
    return await db.fetchrow(
        """
        SELECT o.id, o.currency, o.placed_at, o.donation_amount, o.reversed_amount, o.cancelled_at,
               l.show_merchant, l.order_reference, m.name AS merchant_name, s.paid_at,
               (SELECT max(r.created_at) FROM order_refunds r
                 WHERE r.order_id = o.id AND r.reversed_amount > 0) AS refunded_at,
               (SELECT sum(f.amount) FROM funding_sources f
                 WHERE f.order_id = o.id AND f.kind = 'collected') AS pooled_amount,
               (SELECT min(f.currency) FROM funding_sources f
                 WHERE f.order_id = o.id AND f.kind = 'collected') AS pooled_currency,
               ARRAY(
                 SELECT ROW(sum(f.amount), k.cost, k.currency, k.grade, k.status, sc.country, sc.region,
                            k.created_at,
                            (SELECT min(e.occurred_at) FROM shipment_events e
                              WHERE e.shipment_id = k.shipment_id AND e.result = 'applied'
                                AND e.status = 'handed_over'),
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
        WHERE l.token_hash = $1
        """,
        token_hash,
    )
