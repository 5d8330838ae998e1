"""`g4g audit` / `GET /v1/audit`: recompute everything from the ledger's entries and report any broken invariant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.donations.calculation import reversed_total

EXAMPLES = 10


class AuditCheck(BaseModel):
    name: str
    description: str
    ok: bool
    violations: int
    examples: list[dict[str, Any]]


class AuditReport(BaseModel):
    ok: bool
    checked_at: datetime
    checks: list[AuditCheck]


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[dict[str, Any]]:
    result = await session.execute(text(sql), params)
    return [dict(row._mapping) for row in result]


async def _unbalanced_entries(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT entry_id, currency, sum(amount) AS off_by FROM ledger_postings
           GROUP BY entry_id, currency HAVING sum(amount) <> 0""",
    )


async def _entries_without_postings(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT e.id AS entry_id, e.cause_type, e.cause_id FROM ledger_entries e
           WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id)""",
    )


async def _orders_match_ledger(session: AsyncSession) -> list[dict[str, Any]]:
    # What each order still owes per the ledger, from its entries' postings on the merchant's receivable.
    return await _rows(
        session,
        """SELECT o.external_id AS order_id, o.platform_id, o.donation_amount - o.reversed_amount AS expected,
                  coalesce(l.total, 0) AS ledger
           FROM orders o
           LEFT JOIN (SELECT e.order_id, sum(p.amount) AS total FROM ledger_entries e
                      JOIN ledger_postings p ON p.entry_id = e.id
                      WHERE p.account LIKE 'merchant_%_pledges!_receivable' ESCAPE '!'
                        AND e.order_id IS NOT NULL
                      GROUP BY e.order_id) l ON l.order_id = o.id
           WHERE o.donation_amount - o.reversed_amount <> coalesce(l.total, 0)""",
    )


async def _refund_totals(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        """SELECT o.external_id AS order_id, o.platform_id, o.refunded_amount, coalesce(r.total, 0) AS refunds
           FROM orders o LEFT JOIN (SELECT order_id, sum(amount) AS total FROM order_refunds GROUP BY order_id) r
             ON r.order_id = o.id
           WHERE o.refunded_amount <> coalesce(r.total, 0)""",
    )


async def _reversals_follow_the_rule(session: AsyncSession) -> list[dict[str, Any]]:
    """Each order's reversed total is exactly the SPEC's proportional figure (or all of it, if cancelled)."""
    broken: list[dict[str, Any]] = []
    result = await session.stream(
        text(
            """SELECT external_id, platform_id, donation_amount, base_amount, refunded_amount, reversed_amount,
                      cancelled_at IS NOT NULL AS cancelled FROM orders"""
        )
    )
    async for row in result:
        expected = reversed_total(
            donation=row.donation_amount,
            base=row.base_amount,
            refunded=row.refunded_amount,
            cancelled=row.cancelled,
        )
        if expected != row.reversed_amount:
            broken.append(
                {
                    "order_id": row.external_id,
                    "platform_id": row.platform_id,
                    "reversed": row.reversed_amount,
                    "expected": expected,
                }
            )
    return broken


async def _balances_match_orders(session: AsyncSession) -> list[dict[str, Any]]:
    """Every merchant's receivable balance, from entries alone, equals what its orders still pledge."""
    return await _rows(
        session,
        """WITH ledger AS (
               SELECT split_part(account, ':', 2) AS merchant_id, currency, sum(amount) AS balance
               FROM ledger_postings WHERE account LIKE 'merchant_%_pledges!_receivable' ESCAPE '!'
               GROUP BY 1, 2),
           domain AS (
               SELECT merchant_id, currency, sum(donation_amount - reversed_amount) AS balance
               FROM orders GROUP BY 1, 2)
           SELECT coalesce(l.merchant_id, d.merchant_id) AS merchant_id, coalesce(l.currency, d.currency) AS currency,
                  coalesce(l.balance, 0) AS ledger, coalesce(d.balance, 0) AS orders
           FROM ledger l FULL JOIN domain d ON l.merchant_id = d.merchant_id AND l.currency = d.currency
           WHERE coalesce(l.balance, 0) <> coalesce(d.balance, 0) OR coalesce(l.balance, 0) < 0""",
    )


async def _no_half_processed_deliveries(session: AsyncSession) -> list[dict[str, Any]]:
    return await _rows(
        session,
        "SELECT platform_id, webhook_id FROM webhook_deliveries WHERE status = 'processing'",
    )


CHECKS: list[tuple[str, str, Callable[[AsyncSession], Awaitable[list[dict[str, Any]]]]]] = [
    ("entries_balance", "every entry's postings sum to zero in each currency", _unbalanced_entries),
    ("entries_have_postings", "every entry moves money", _entries_without_postings),
    (
        "orders_match_ledger",
        "each order's donation less reversals equals its ledger postings",
        _orders_match_ledger,
    ),
    ("refund_totals", "each order's refunded total equals its refunds", _refund_totals),
    (
        "reversals_follow_rule",
        "each order's reversal is round_half_even(D * min(R, base) / base), or D if cancelled",
        _reversals_follow_the_rule,
    ),
    (
        "balances_match_orders",
        "each merchant's receivable balance equals its orders' net pledges, never negative",
        _balances_match_orders,
    ),
    ("inbox_settled", "no delivery was committed half-processed", _no_half_processed_deliveries),
]


async def run_audit(session: AsyncSession, *, now: datetime) -> AuditReport:
    checks = []
    for name, description, check in CHECKS:
        violations = await check(session)
        checks.append(
            AuditCheck(
                name=name,
                description=description,
                ok=not violations,
                violations=len(violations),
                examples=[{k: _plain(v) for k, v in row.items()} for row in violations[:EXAMPLES]],
            )
        )
    return AuditReport(ok=all(c.ok for c in checks), checked_at=now, checks=checks)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
