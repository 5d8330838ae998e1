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
        description=(
            'A count rounded down to a multiple of 5, or one step further where needed ("<5" for 0 to 4), so '
            "that no small count can be read or worked out: a shown `n` means at least n and less than n + 10."
        )
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
    """The currencies above valued in the base currency: money in the pool at what its conversion fetched (each
    currency's shared among the months by their money of it in the pool), the rest at the latest rates (those
    without a rate left out). No step on the way to the pool exceeds an earlier one."""


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
    """Merchants with at least one order that gave."""
    orders: Count
    """Orders that gave: an order whose donation is zero (placed before its merchant's first rule, or while it had
    none) is at no stage and is not counted."""
    orders_by_stage: list[StageCount]
    raised: MoneyOut
    """Final, billed and collected donations in the base currency: what reached the pool at what its conversion
    fetched (`reached_pool`), the rest at the latest rates, rounded once; so never less than `reached_pool`."""
    pledged: MoneyOut
    """Donations still inside their orders' return window: promised, not yet raised."""
    reached_pool: MoneyOut
    """Money collected and converted into the pool that buys Love Packages, at the rates it was converted at."""
    pool_balance: MoneyOut
    """What the pool holds now, plus the part of the money in packages below `packages.money_step` (which
    `reached_pool - packages.in_packages` would otherwise give away)."""
    reached_pool_share_bps: int | None
    """The share of money raised that reached the pool, in basis points (both valued at the latest rates);
    null while nothing was raised."""
    money_by_stage: list[StageMoney]
    """Per currency."""
    money_by_stage_in_base_currency: StageMoney
    """`money_by_stage` valued in the base currency as `raised` is: its `in_pool` is `reached_pool`, and its
    stages add up to `raised` (final + billed + collected)."""
    not_valued: list[str]
    """Currencies with no exchange rate yet: left out of every base-currency figure."""
    rates: list[RateUsed]
    by_month: list[MonthFigures]
    packages: PackageFigures | None = None
    """Love Packages: how many, what they cost, where the money in them is."""
    countries: list[PlaceFigures] = []
    regions: list[PlaceFigures] = []
    delivery_funnel: list[FunnelCount] = []


# ---- Love Packages, for the public ----

FunnelStep = Literal["allocated", "shipped", "delivered", "accepted"]


class FunnelCount(BaseModel):
    step: FunnelStep
    """How far packages got: each counts at every step it reached (allocated to a student, handed to the
    logistics partner, delivered at the school, accepted by the school)."""
    packages: Count


class PlaceFigures(BaseModel):
    country: str
    region: str | None
    """Null on a country's own row."""
    packages_allocated: Count
    packages_delivered: Count
    """Accepted by the school."""
    students_reached: Count
    """Students whose package reached them."""


class PackageFigures(BaseModel):
    allocated: Count
    delivered: Count
    students_reached: Count
    cost_per_package: MoneyOut | None
    """What an allocated package cost: its price when all cost the same, else the average to a whole unit; null
    before the first one."""
    money_step: MoneyOut | None = None
    """The money figures below are rounded down to a multiple of this (five of the dearest packages' worth), like
    the counts, so that no count of packages follows from dividing them by the cost. Null before the first one."""
    in_packages: MoneyOut
    """All money that went into packages (allocated = in transit + delivered + written off + in stock)."""
    in_transit: MoneyOut
    delivered_money: MoneyOut
    written_off: MoneyOut
    in_stock: MoneyOut
    reached_schools_share_bps: int | None
    """The share of money raised that reached schools in accepted packages, in basis points."""


# ---- one merchant's impact ----


class CountryImpact(BaseModel):
    country: str
    packages_funded: str
    """Packages its money paid for, as a decimal fraction (its share of each package's cost, summed)."""
    packages_delivered: str
    """Of those, the packages the schools accepted, on the same basis: its share of each one's cost, summed, as a
    decimal fraction (so it never exceeds `packages_funded`)."""


class MerchantImpactOut(BaseModel):
    merchant_id: str
    placed_from: datetime | None
    placed_to: datetime | None
    """The period: orders placed from `from` (inclusive) to `to` (exclusive); null for all time."""
    base_currency: str
    orders: int
    """Orders that gave (a zero donation is at no stage and not counted)."""
    money_by_stage: list[StageMoney]
    """Per currency. Pledged money (inside the return window) is not raised."""
    raised: list[MoneyOut]
    """Per currency: final, billed and collected."""
    reached_pool: MoneyOut
    """Its money converted into the pool, in the base currency."""
    in_packages: MoneyOut
    reached_schools: MoneyOut
    """Its money in packages the schools accepted."""
    reached_schools_share_bps: int | None
    """`reached_schools` over `reached_pool`, in basis points."""
    packages_funded: str
    """Packages its money paid for, as a decimal fraction."""
    students_reached: int
    by_country: list[CountryImpact]
