"""`GET /v1/funds`: where the money is, per stage and currency, from the orders, statements and the ledger."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.money import MoneyOut
from app.ledger import accounts
from app.settlement.schemas import FundsOut, NextPackage, PackagedMoney, StageTotals


async def funds_view(
    session: AsyncSession, *, now: datetime, window: timedelta, base_currency: str
) -> FundsOut:
    rows = (
        await session.execute(
            text(
                """
                WITH o AS (
                    SELECT o.currency,
                           sum(CASE WHEN o.statement_id IS NULL AND o.placed_at > :final_before
                                    THEN o.donation_amount - o.reversed_amount ELSE 0 END) AS pledged,
                           sum(CASE WHEN o.statement_id IS NULL AND o.placed_at <= :final_before
                                    THEN o.donation_amount - o.reversed_amount ELSE 0 END) AS final,
                           sum(o.reversed_amount) AS reversed,
                           sum(CASE WHEN o.statement_id IS NOT NULL
                                    THEN o.reversed_amount - o.settled_reversed ELSE 0 END) AS credits_due
                    FROM orders o GROUP BY o.currency),
                s AS (
                    SELECT currency,
                           sum(CASE WHEN status <> 'paid' THEN total ELSE 0 END) AS billed,
                           sum(CASE WHEN status = 'paid' THEN total ELSE 0 END) AS collected
                    FROM statements GROUP BY currency),
                u AS (
                    SELECT currency, sum(amount) AS unconverted FROM ledger_postings
                    WHERE account = :unconverted GROUP BY currency),
                c AS (  -- remainders Stripe could not take: final, waiting for the next statement
                    SELECT currency, sum(amount) AS carried FROM statement_carryovers
                    WHERE into_statement_id IS NULL GROUP BY currency)
                SELECT coalesce(o.currency, s.currency, u.currency, c.currency) AS currency,
                       coalesce(o.pledged, 0) AS pledged, coalesce(o.final, 0) + coalesce(c.carried, 0) AS final,
                       coalesce(s.billed, 0) AS billed, coalesce(s.collected, 0) AS collected,
                       coalesce(u.unconverted, 0) AS collected_unconverted, coalesce(o.reversed, 0) AS reversed,
                       coalesce(o.credits_due, 0) AS credits_due
                FROM o FULL JOIN s ON s.currency = o.currency FULL JOIN u ON u.currency = coalesce(o.currency, s.currency)
                     FULL JOIN c ON c.currency = coalesce(o.currency, s.currency, u.currency)
                ORDER BY 1
                """
            ),
            {"final_before": now - window, "unconverted": accounts.COLLECTED_UNCONVERTED},
        )
    ).all()
    balances = {
        r.account: int(r.balance)
        for r in await session.execute(
            text(
                """SELECT account, coalesce(sum(amount), 0) AS balance FROM ledger_postings
                   WHERE account = ANY(:accounts) AND currency = :base GROUP BY account"""
            ),
            {"accounts": [accounts.POOL, *_PACKAGE_ACCOUNTS], "base": base_currency},
        )
    }

    def money(account: str) -> MoneyOut:
        return MoneyOut(amount=balances.get(account, 0), currency=base_currency)

    pool = money(accounts.POOL)
    # What left the pool for packages, from the queue rather than the stage accounts, so `allocated` = in transit
    # + delivered + written off + in stock is a check, not a definition.
    queue = (
        await session.execute(
            text(
                """SELECT (SELECT coalesce(sum(f.amount), 0) FROM package_funding f
                           JOIN funding_sources s ON s.id = f.source_id WHERE s.currency = :base) AS spent,
                          (SELECT coalesce(sum(amount), 0) FROM funding_sources
                           WHERE kind = 'released' AND currency = :base) AS released"""
            ),
            {"base": base_currency},
        )
    ).one()
    cheapest = (
        await session.execute(
            text(
                """SELECT v.kind_id, v.unit_cost FROM package_kinds k
                   JOIN LATERAL (SELECT kind_id, unit_cost FROM package_kind_versions
                                 WHERE kind_id = k.id ORDER BY version DESC LIMIT 1) v ON true
                   WHERE k.retired_at IS NULL ORDER BY v.unit_cost, v.kind_id LIMIT 1"""
            )
        )
    ).first()
    next_package = None
    if cheapest is not None:
        cost = int(cheapest.unit_cost)
        next_package = NextPackage(
            package_kind_id=cheapest.kind_id,
            available=pool,
            cost=MoneyOut(amount=cost, currency=base_currency),
            short_by=MoneyOut(amount=max(0, cost - pool.amount), currency=base_currency),
        )
    return FundsOut(
        as_of=now,
        base_currency=base_currency,
        stages=[StageTotals.model_validate(dict(r._mapping)) for r in rows],
        pool=pool,
        packages=PackagedMoney(
            allocated=MoneyOut(amount=int(queue.spent) - int(queue.released), currency=base_currency),
            in_transit=money(accounts.PACKAGES_ASSIGNED),
            delivered=money(accounts.PACKAGES_DELIVERED),
            written_off=money(accounts.PACKAGES_WRITTEN_OFF),
            in_stock=money(accounts.PACKAGES_IN_STOCK),
            released=MoneyOut(amount=int(queue.released), currency=base_currency),
        ),
        next_package=next_package,
    )


_PACKAGE_ACCOUNTS = (
    accounts.PACKAGES_ASSIGNED,
    accounts.PACKAGES_DELIVERED,
    accounts.PACKAGES_WRITTEN_OFF,
    accounts.PACKAGES_IN_STOCK,
)
