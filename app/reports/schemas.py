"""The reports contract: the public transparency report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.core.money import MoneyOut

SMALL_COUNT: Literal["<5"] = "<5"
Count = Annotated[
    int | Literal["<5"],
    Field(
        description='A count; "<5" where it is below five (or hidden so that another such count stays hidden)'
    ),
]
Stage = Literal["pledged", "final", "billed", "collected", "reversed"]


class StageMoney(BaseModel):
    """Net donations (after reversals) in each stage, in minor units of `currency`. `in_pool` is the part of
    `collected` already converted into the pool; `reversed` is what refunds and cancellations took back."""

    currency: str
    pledged: int
    final: int
    billed: int
    collected: int
    in_pool: int
    reversed: int


class StageCount(BaseModel):
    stage: Stage
    orders: Count


class MonthFigures(BaseModel):
    month: str
    """`YYYY-MM`, by the month (UTC) the orders were placed in."""
    orders: Count
    money: list[StageMoney]
    """Per currency."""
    in_base_currency: StageMoney
    """The currencies above valued in the base currency at the latest rates (those without a rate left out)."""


class RateUsed(BaseModel):
    currency: str
    rate: str
    """Units of the base currency one unit of `currency` buys."""


class TransparencyOut(BaseModel):
    """Programme totals, as a philanthropy report gives them. Money is never counted as raised while pledged."""

    updated_at: datetime
    """When these figures were computed (they are recomputed regularly; this moves only when they change)."""
    base_currency: str
    merchants_taking_part: Count
    """Merchants with at least one order."""
    orders: Count
    orders_by_stage: list[StageCount]
    raised: MoneyOut
    """Final, billed and collected donations, valued in the base currency at the latest rates."""
    pledged: MoneyOut
    """Donations still inside their orders' return window: promised, not yet raised."""
    reached_pool: MoneyOut
    """Money collected and converted into the pool that buys Love Packages, at the rates it was converted at."""
    pool_balance: MoneyOut
    """What the pool holds now."""
    reached_pool_share_bps: int | None
    """The share of money raised that reached the pool, in basis points (both valued at the latest rates);
    null while nothing was raised."""
    money_by_stage: list[StageMoney]
    """Per currency."""
    money_by_stage_in_base_currency: StageMoney
    not_valued: list[str]
    """Currencies with no exchange rate yet: left out of every base-currency figure."""
    rates: list[RateUsed]
    by_month: list[MonthFigures]
