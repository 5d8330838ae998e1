"""Every donations query. The order-event path runs set-based statements on the raw asyncpg connection (one
statement per step for a whole batch of events); reads use SQLAlchemy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import DonationRule, Merchant, Order, Statement, WebhookAnomaly, WebhookDelivery

# ---- the order-event path (raw asyncpg, set-based) ----


async def lock_keys(db: asyncpg.Connection, keys: Sequence[tuple[int, int, bool]]) -> None:
    """Transaction-scoped advisory locks given as (level, key, shared?). Everyone takes them level by level
    (merchants, then orders) and in key order within a level, so no two transactions can deadlock on them."""
    if keys:
        await db.execute(
            """
            SELECT CASE WHEN t.shared THEN pg_advisory_xact_lock_shared(t.k)::text
                        ELSE pg_advisory_xact_lock(t.k)::text END
            FROM unnest($1::int[], $2::bigint[], $3::bool[]) AS t(level, k, shared) ORDER BY t.level, t.k
            """,
            [level for level, _, _ in keys],
            [k for _, k, _ in keys],
            [shared for _, _, shared in keys],
        )


async def lock_and_claim(
    db: asyncpg.Connection,
    locks: Sequence[tuple[int, int, bool]],
    rows: Sequence[tuple[str, str, bytes, str | None]],
) -> set[tuple[str, str]]:
    """Take the batch's natural-key locks (see `lock_keys`), then insert (platform, webhook id, body, event type)
    into the inbox, in one round trip. Returns the keys that were new; the others were delivered before.

    The lock query is an uncommitted CTE read by the insert through an uncorrelated sub-select, so PostgreSQL
    runs it (as an InitPlan) before the first row is inserted."""
    records = await db.fetch(
        """
        WITH locked AS (
            SELECT CASE WHEN t.shared THEN pg_advisory_xact_lock_shared(t.k)::text
                        ELSE pg_advisory_xact_lock(t.k)::text END AS done
            FROM unnest($1::int[], $2::bigint[], $3::bool[]) AS t(level, k, shared) ORDER BY t.level, t.k
        )
        INSERT INTO webhook_deliveries (platform_id, webhook_id, body, event_type, status)
        SELECT p, w, b, t, 'processing' FROM unnest($4::text[], $5::text[], $6::bytea[], $7::text[]) AS u(p, w, b, t)
        WHERE (SELECT count(*) FROM locked) >= 0
        ORDER BY p, w
        ON CONFLICT DO NOTHING
        RETURNING platform_id, webhook_id
        """,
        [level for level, _, _ in locks],
        [k for _, k, _ in locks],
        [shared for _, _, shared in locks],
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    return {(r["platform_id"], r["webhook_id"]) for r in records}


async def stored_answers(
    db: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, int, dict[str, Any]]]:
    records = await db.fetch(
        """
        SELECT d.platform_id, d.webhook_id, d.status, d.response_status, d.response_body::text AS body
        FROM webhook_deliveries d JOIN unnest($1::text[], $2::text[]) AS u(p, w)
          ON d.platform_id = u.p AND d.webhook_id = u.w
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {
        (r["platform_id"], r["webhook_id"]): (r["status"], r["response_status"], json.loads(r["body"]))
        for r in records
    }


@dataclass(frozen=True, slots=True)
class SettledDelivery:
    platform_id: str
    webhook_id: str
    status: str
    response_status: int
    response_body: dict[str, Any]
    natural_key: str | None
    waiting_for: str | None


async def settle_deliveries(db: asyncpg.Connection, rows: Sequence[SettledDelivery]) -> None:
    if not rows:
        return
    await db.execute(
        """
        UPDATE webhook_deliveries d
        SET status = u.s, response_status = u.rs, response_body = u.rb::jsonb, natural_key = u.nk,
            waiting_for = u.wf, settled_at = now()
        FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[])
             AS u(p, w, s, rs, rb, nk, wf)
        WHERE d.platform_id = u.p AND d.webhook_id = u.w
        """,
        [r.platform_id for r in rows],
        [r.webhook_id for r in rows],
        [r.status for r in rows],
        [r.response_status for r in rows],
        [json.dumps(r.response_body) for r in rows],
        [r.natural_key for r in rows],
        [r.waiting_for for r in rows],
    )


async def parked_waiting_for(
    db: asyncpg.Connection, waits: Sequence[tuple[str, str]]
) -> list[asyncpg.Record]:
    """Parked deliveries waiting for any of (platform, what), oldest first, locked for this transaction."""
    if not waits:
        return []
    return list(
        await db.fetch(
            """
            SELECT d.platform_id, d.webhook_id, d.body FROM webhook_deliveries d
            JOIN unnest($1::text[], $2::text[]) AS u(p, wf) ON d.platform_id = u.p AND d.waiting_for = u.wf
            WHERE d.status = 'parked'
            ORDER BY d.received_at, d.webhook_id
            FOR UPDATE OF d
            """,
            [w[0] for w in waits],
            [w[1] for w in waits],
        )
    )


async def merchants_and_rules(
    db: asyncpg.Connection, wanted: Sequence[tuple[str, str, datetime]]
) -> list[asyncpg.Record]:
    """For each (platform, merchant external id, placed_at), in order: the merchant (or nulls) and the rule
    version in effect at placed_at (or nulls)."""
    return list(
        await db.fetch(
            """
            SELECT e.i, m.id AS merchant_id, r.id AS rule_id
            FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS e(p, x, placed_at, i)
            LEFT JOIN merchants m ON m.platform_id = e.p AND m.external_id = e.x
            LEFT JOIN LATERAL (
                SELECT r.id FROM donation_rules r
                WHERE r.merchant_id = m.id AND r.effective_from <= e.placed_at
                ORDER BY r.effective_from DESC, r.created_at DESC, r.id DESC LIMIT 1
            ) r ON true
            ORDER BY e.i
            """,
            [w[0] for w in wanted],
            [w[1] for w in wanted],
            [w[2] for w in wanted],
        )
    )


async def rule_terms(db: asyncpg.Connection, rule_ids: Sequence[str]) -> list[tuple[str, int, Any, Any]]:
    """(id, rate_bps, fixed_per_unit JSON, sku_overrides JSON) of rule versions."""
    records = await db.fetch(
        """SELECT id, rate_bps, fixed_per_unit::text AS f, sku_overrides::text AS o FROM donation_rules
           WHERE id = ANY($1::text[])""",
        list(rule_ids),
    )
    return [(r["id"], r["rate_bps"], r["f"], r["o"]) for r in records]


async def rule_terms_orm(session: AsyncSession, rule_ids: Sequence[str]) -> list[tuple[str, int, Any, Any]]:
    """The same as `rule_terms`, through a session (quotes)."""
    rows = await session.execute(
        select(
            DonationRule.id, DonationRule.rate_bps, DonationRule.fixed_per_unit, DonationRule.sku_overrides
        ).where(DonationRule.id.in_(list(rule_ids)))
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def rule_id_in_effect(session: AsyncSession, merchant_id: str, at: datetime) -> str | None:
    return await session.scalar(
        select(DonationRule.id)
        .where(DonationRule.merchant_id == merchant_id, DonationRule.effective_from <= at)
        .order_by(DonationRule.effective_from.desc(), DonationRule.created_at.desc(), DonationRule.id.desc())
        .limit(1)
    )


@dataclass(frozen=True, slots=True)
class NewOrder:
    id: str
    platform_id: str
    external_id: str
    merchant_id: str
    currency: str
    placed_at: datetime
    items_json: str
    base_amount: int
    donation_amount: int
    rule_id: str | None
    content_hash: bytes


async def insert_orders(db: asyncpg.Connection, orders: Sequence[NewOrder]) -> set[tuple[str, str]]:
    """Insert orders unless their (platform, external id) exists; returns the keys inserted."""
    if not orders:
        return set()
    records = await db.fetch(
        """
        INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items, base_amount,
                            donation_amount, rule_id, refunded_amount, reversed_amount, content_hash)
        SELECT id, p, x, m, c, pa, it::jsonb, b, d, r, 0, 0, h
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
                    $8::bigint[], $9::bigint[], $10::text[], $11::bytea[]) AS u(id, p, x, m, c, pa, it, b, d, r, h)
        ORDER BY p, x
        ON CONFLICT (platform_id, external_id) DO NOTHING
        RETURNING platform_id, external_id
        """,
        [o.id for o in orders],
        [o.platform_id for o in orders],
        [o.external_id for o in orders],
        [o.merchant_id for o in orders],
        [o.currency for o in orders],
        [o.placed_at for o in orders],
        [o.items_json for o in orders],
        [o.base_amount for o in orders],
        [o.donation_amount for o in orders],
        [o.rule_id for o in orders],
        [o.content_hash for o in orders],
    )
    return {(r["platform_id"], r["external_id"]) for r in records}


_ORDERS_BY_KEY = """
    SELECT o.id, o.platform_id, o.external_id, m.external_id AS merchant_external_id, o.merchant_id,
           o.currency, o.base_amount, o.donation_amount, o.refunded_amount, o.reversed_amount,
           o.cancelled_at IS NOT NULL AS cancelled, o.content_hash, o.statement_id IS NOT NULL AS billed
    FROM orders o
    JOIN unnest($1::text[], $2::text[]) AS u(p, x) ON o.platform_id = u.p AND o.external_id = u.x
    JOIN merchants m ON m.id = o.merchant_id
    ORDER BY o.id
"""
_ORDERS_BY_KEY_LOCKED = _ORDERS_BY_KEY + "FOR UPDATE OF o\n"


async def orders_by_key(
    db: asyncpg.Connection, keys: Sequence[tuple[str, str]], *, lock: bool = True
) -> list[asyncpg.Record]:
    """Orders by (platform, external id); with `lock`, row-locked in id order (as settlement locks them)."""
    if not keys:
        return []
    query = _ORDERS_BY_KEY_LOCKED if lock else _ORDERS_BY_KEY
    return list(await db.fetch(query, [k[0] for k in keys], [k[1] for k in keys]))


async def refund_hashes(
    db: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], bytes]:
    """Content hashes of existing refunds, by (order id, refund id)."""
    if not keys:
        return {}
    records = await db.fetch(
        """
        SELECT r.order_id, r.refund_id, r.content_hash FROM order_refunds r
        JOIN unnest($1::text[], $2::text[]) AS u(o, rf) ON r.order_id = u.o AND r.refund_id = u.rf
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["order_id"], r["refund_id"]): bytes(r["content_hash"]) for r in records}


@dataclass(frozen=True, slots=True)
class NewRefund:
    id: str
    order_id: str
    refund_id: str
    amount: int
    currency: str
    reversed_amount: int
    content_hash: bytes


async def insert_refunds(db: asyncpg.Connection, refunds: Sequence[NewRefund]) -> None:
    if not refunds:
        return
    await db.execute(
        """
        INSERT INTO order_refunds (id, order_id, refund_id, amount, currency, reversed_amount, content_hash)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[],
                             $7::bytea[])
        """,
        [r.id for r in refunds],
        [r.order_id for r in refunds],
        [r.refund_id for r in refunds],
        [r.amount for r in refunds],
        [r.currency for r in refunds],
        [r.reversed_amount for r in refunds],
        [r.content_hash for r in refunds],
    )


async def update_order_totals(
    db: asyncpg.Connection, rows: Sequence[tuple[str, int, int, datetime | None]]
) -> None:
    """(order id, refunded, reversed, cancelled_at) — the running totals after this batch."""
    if not rows:
        return
    await db.execute(
        """
        UPDATE orders o SET refunded_amount = u.r, reversed_amount = u.v,
                            cancelled_at = COALESCE(o.cancelled_at, u.c)
        FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::timestamptz[]) AS u(id, r, v, c)
        WHERE o.id = u.id
        """,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )


async def insert_anomalies(
    db: asyncpg.Connection, rows: Sequence[tuple[str, str, str, str, str | None, str]]
) -> None:
    """(id, platform, webhook id, kind, natural key, detail)."""
    if not rows:
        return
    await db.execute(
        """
        INSERT INTO webhook_anomalies (id, platform_id, webhook_id, kind, natural_key, detail)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
        """,
        *[[r[i] for r in rows] for i in range(6)],
    )


# ---- reads (SQLAlchemy) ----


async def merchant_by_external_id(
    session: AsyncSession, platform_id: str, external_id: str
) -> Merchant | None:
    return await session.scalar(
        select(Merchant).where(Merchant.platform_id == platform_id, Merchant.external_id == external_id)
    )


async def rules_newest_first(
    session: AsyncSession, merchant_id: str, *, before: str | None, limit: int
) -> list[DonationRule]:
    query = (
        select(DonationRule).where(DonationRule.merchant_id == merchant_id).order_by(DonationRule.id.desc())
    )
    if before is not None:
        query = query.where(DonationRule.id < before)
    return list(await session.scalars(query.limit(limit)))


async def order_with_merchant(
    session: AsyncSession, platform_id: str, external_id: str
) -> tuple[Order, Merchant, str | None] | None:
    """The order, its merchant, and the status of the statement that billed it (if any)."""
    row = (
        await session.execute(
            select(Order, Merchant, Statement.status)
            .join(Merchant, Merchant.id == Order.merchant_id)
            .outerjoin(Statement, Statement.id == Order.statement_id)
            .where(Order.platform_id == platform_id, Order.external_id == external_id)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def merchant_orders(
    session: AsyncSession, merchant_id: str, *, after: str | None, limit: int
) -> list[tuple[Order, str | None]]:
    """A merchant's orders with the status of the statement that billed each (if any)."""
    query = (
        select(Order, Statement.status)
        .outerjoin(Statement, Statement.id == Order.statement_id)
        .where(Order.merchant_id == merchant_id)
        .order_by(Order.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Order.id > after)
    return [(row[0], row[1]) for row in await session.execute(query)]


async def parked_deliveries(
    session: AsyncSession, *, platform_id: str | None, after: tuple[str, str] | None, limit: int
) -> list[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.status == "parked")
    if platform_id is not None:
        query = query.where(WebhookDelivery.platform_id == platform_id)
    if after is not None:
        query = query.where(tuple_(WebhookDelivery.platform_id, WebhookDelivery.webhook_id) > tuple_(*after))
    query = query.order_by(WebhookDelivery.platform_id, WebhookDelivery.webhook_id).limit(limit)
    return list(await session.scalars(query))


async def anomalies(session: AsyncSession, *, after: str | None, limit: int) -> list[WebhookAnomaly]:
    query = select(WebhookAnomaly).order_by(WebhookAnomaly.id).limit(limit)
    if after is not None:
        query = query.where(WebhookAnomaly.id > after)
    return list(await session.scalars(query))


async def delete_settled_deliveries(db: asyncpg.Connection, *, received_before: datetime, limit: int) -> int:
    """Forget up to `limit` inbox rows received before the cutoff and settled (parked ones wait on, whatever
    their age); returns how many."""
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM webhook_deliveries WHERE (platform_id, webhook_id) IN (
                   SELECT platform_id, webhook_id FROM webhook_deliveries
                   WHERE received_at < $1 AND status NOT IN ('parked', 'processing')
                   ORDER BY received_at LIMIT $2)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        received_before,
        limit,
    )
    return int(deleted or 0)
