"""What a merchant that opted in to a public profile shows: what it gives and what that became, with every
small count hidden as the public report hides them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.money import MoneyOut
from app.donations import repository as donations
from app.models import DonationRule, Merchant
from app.reports.disclosure import band, shown
from app.reports.schemas import SMALL_COUNT, Count, TransparencyOut
from app.reports.service import merchant_impact


def _banded(count: int, programme: Count) -> Count:
    """A merchant's count as the public report publishes counts (rounded down to a multiple of five, "<5" below
    five), and never above the report's own figure for the whole programme: the report sometimes rounds a total
    one step further so that its small parts can't be worked out, and a merchant that funded every package would
    otherwise publish the total unlowered beside it."""
    ceiling = 0 if programme == "<5" else programme
    return shown(min(band(count), ceiling))


@dataclass(frozen=True, slots=True)
class PublicFigures:
    merchant: Merchant
    rate_bps: int | None
    """The share of sales its rule in effect gives; None without a rule in effect."""
    fixed_per_unit: list[MoneyOut]
    packages_funded: Count
    """Whole Love Packages its donations paid for (its shares of each, summed), banded like the public report."""
    packages_delivered: Count
    students_reached: Count
    countries: list[str]


async def public_figures(
    session: AsyncSession,
    merchant: Merchant,
    *,
    report: TransparencyOut,
    now: datetime,
    window: timedelta,
    base_currency: str,
) -> PublicFigures:
    """`report`: the public figures as published now, which a profile never tells more than."""
    rule_id = await donations.rule_id_in_effect(session, merchant.id, now)
    rule = await session.get(DonationRule, rule_id) if rule_id else None
    impact = await merchant_impact(
        session,
        merchant.id,
        placed_from=None,
        placed_to=None,
        now=now,
        window=window,
        base_currency=base_currency,
    )
    programme = report.packages
    allocated, delivered, reached = (
        (programme.allocated, programme.delivered, programme.students_reached)
        if programme is not None
        else (SMALL_COUNT, SMALL_COUNT, SMALL_COUNT)
    )
    shown_countries = {c.country for c in report.countries if c.packages_allocated != SMALL_COUNT}
    return PublicFigures(
        merchant=merchant,
        rate_bps=rule.rate_bps if rule else None,
        fixed_per_unit=[MoneyOut(amount=f["amount"], currency=f["currency"]) for f in rule.fixed_per_unit]
        if rule
        else [],
        packages_funded=_banded(math.floor(Decimal(impact.packages_funded)), allocated),
        packages_delivered=_banded(
            math.floor(sum((Decimal(c.packages_delivered) for c in impact.by_country), Decimal(0))),
            delivered,
        ),
        students_reached=_banded(impact.students_reached, reached),
        # Only countries the report shows as reached by five packages or more: "<5" there may mean none at all.
        countries=sorted({c.country for c in impact.by_country} & shown_countries),
    )
