"""The donations contract: rules, quotes, order events in, donations out."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.core.money import MAX_ORDER_MINOR_UNITS, CurrencyCode, MoneyOut
from app.core.patterns import pattern
from app.core.types import PRINTABLE, ExternalId, Instant, ResourceId, WholeNumber

Sku = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=100,
        pattern=pattern(r"^[^\x00-\x1f\x7f]+$", "must be text without control characters"),
    ),
]
RateBps = Annotated[
    int, Field(ge=0, le=10_000, strict=True, description="Basis points of the amount"), WholeNumber
]
Quantity = Annotated[int, Field(ge=1, le=1_000_000, strict=True), WholeNumber]
LineAmount = Annotated[
    int, Field(ge=0, le=MAX_ORDER_MINOR_UNITS, strict=True, description="Minor units"), WholeNumber
]
RefundAmount = Annotated[
    int, Field(ge=1, le=MAX_ORDER_MINOR_UNITS, strict=True, description="Minor units"), WholeNumber
]
# Bounds on a rule's size: every quote and order of the merchant applies it.
MAX_FIXED_AMOUNTS = 10
MAX_SKU_OVERRIDES = 500
MAX_FIXED_PER_UNIT = 10**9


class FixedAmountIn(BaseModel):
    """An amount donated per unit sold, on orders in its currency."""

    model_config = ConfigDict(extra="forbid")
    amount: Annotated[int, Field(ge=0, le=MAX_FIXED_PER_UNIT, strict=True), WholeNumber]
    currency: CurrencyCode


FixedAmounts = Annotated[list[FixedAmountIn], Field(max_length=MAX_FIXED_AMOUNTS)]
EventRef = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=PRINTABLE)]


def _unique_currencies(amounts: list[FixedAmountIn], where: str) -> None:
    currencies = [m.currency for m in amounts]
    if len(set(currencies)) != len(currencies):
        raise ValueError(f"{where}: at most one amount per currency")


class SkuOverrideIn(BaseModel):
    """Replaces the default rule for one SKU: its own rate and fixed amounts, or `excluded`."""

    model_config = ConfigDict(extra="forbid")
    sku: Sku
    rate_bps: RateBps | None = None
    fixed_per_unit: FixedAmounts | None = None
    excluded: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> SkuOverrideIn:
        if self.excluded and (self.rate_bps is not None or self.fixed_per_unit):
            raise ValueError("an excluded SKU has no rate or fixed amounts")
        if not self.excluded and self.rate_bps is None and self.fixed_per_unit is None:
            raise ValueError("give rate_bps, fixed_per_unit, or excluded: true")
        _unique_currencies(self.fixed_per_unit or [], "fixed_per_unit")
        return self


class DonationRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_bps: RateBps
    fixed_per_unit: FixedAmounts = []
    sku_overrides: Annotated[list[SkuOverrideIn], Field(max_length=MAX_SKU_OVERRIDES)] = []
    effective_from: Instant | None = Field(
        default=None, description="When the rule takes effect; default now. Never in the past."
    )

    @model_validator(mode="after")
    def _unique(self) -> DonationRuleIn:
        _unique_currencies(self.fixed_per_unit, "fixed_per_unit")
        skus = [o.sku for o in self.sku_overrides]
        if len(set(skus)) != len(skus):
            raise ValueError("sku_overrides: each SKU at most once")
        return self


class SkuOverrideOut(BaseModel):
    sku: str
    rate_bps: int | None = None
    fixed_per_unit: list[MoneyOut] | None = None
    excluded: bool = False


class DonationRuleOut(BaseModel):
    id: str
    merchant_id: str
    rate_bps: int
    fixed_per_unit: list[MoneyOut]
    sku_overrides: list[SkuOverrideOut]
    effective_from: datetime
    created_at: datetime
    status: Literal["scheduled", "in_effect", "superseded"]
    """`scheduled`: starts later; `in_effect`: what an order placed now gets; `superseded`: history."""


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Sku
    quantity: Quantity
    amount: LineAmount
    """The line's subtotal after discounts, without tax or shipping, in minor units."""


def _bounded_subtotal(lines: list[LineIn]) -> list[LineIn]:
    total = sum(line.amount for line in lines)
    if total > MAX_ORDER_MINOR_UNITS:
        raise ValueError(
            f"the lines' amounts add up to {total}, more than {MAX_ORDER_MINOR_UNITS} minor units"
        )
    return lines


Lines = Annotated[list[LineIn], Field(min_length=1, max_length=500), AfterValidator(_bounded_subtotal)]


class QuoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    merchant_id: ExternalId
    """The platform's own id for the merchant."""
    currency: CurrencyCode
    placed_at: Instant | None = None
    """When the buyer sees the quote; default now."""
    items: Lines
    platform_id: ResourceId | None = None
    """Admin only: the platform the merchant sells on."""


class QuoteOut(BaseModel):
    donation: MoneyOut
    merchant_id: str
    placed_at: datetime
    rule_id: str | None


class OrderPaidData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: EventRef
    merchant_id: ExternalId
    currency: CurrencyCode
    placed_at: Instant
    items: Lines


class OrderRefundedData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: EventRef
    merchant_id: ExternalId
    refund_id: EventRef
    currency: CurrencyCode
    amount: RefundAmount


class OrderCancelledData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: EventRef
    merchant_id: ExternalId


class OrderPaid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["order.paid"]
    timestamp: Instant
    data: OrderPaidData


class OrderRefunded(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["order.refunded"]
    timestamp: Instant
    data: OrderRefundedData


class OrderCancelled(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["order.cancelled"]
    timestamp: Instant
    data: OrderCancelledData


OrderEvent = Annotated[OrderPaid | OrderRefunded | OrderCancelled, Field(discriminator="type")]


class WebhookAnswer(BaseModel):
    status: Literal["applied", "parked", "duplicate"]


class TrailItem(BaseModel):
    """A Love Package this order's donation helped fund: how much of it, where it went, how far it got. Never a
    student."""

    package_id: str
    share: MoneyOut
    """This order's money in the package (base currency)."""
    country: str | None
    region: str | None
    grade: str | None
    delivery_status: str
    """The package's status: allocated, shipped, delivered, accepted, damaged, missing, in_stock, cancelled."""
    stage: Literal["in_transit", "delivered", "written_off", "in_stock", "released"]
    """Where its money is: in transit until the school confirms receipt, then delivered (accepted) or written
    off (damaged, missing); in stock (came back, for a later student); released (cancelled before it left: the
    money went back to the pool and pays for another package, which the trail lists too)."""
    delivered_at: datetime | None
    """When its shipment reached the school."""
    receipt_confirmed_at: datetime | None
    """When the school confirmed what it received."""


Stage = Literal["pledged", "final", "billed", "collected", "reversed"]
DonationReason = Literal["before-first-rule", "no-rule-in-force"]


class DonationRow(BaseModel):
    order_id: str
    currency: str
    donation: MoneyOut
    reversed: MoneyOut
    net: MoneyOut
    stage: Stage
    placed_at: datetime
    donation_reason: DonationReason | None
    """Why no donation rule applied, so the donation is 0: `before-first-rule` (placed before the merchant's
    first rule took effect) or `no-rule-in-force` (the merchant had no rule when the order was recorded).
    null when a rule applied (its donation may still be 0, e.g. an excluded SKU)."""
    donation_note: str | None
    """The same, in words for a person; null when a rule applied."""


class OrderDonationOut(DonationRow):
    merchant_id: str
    """The platform's id for the merchant, as in its order events."""
    trail: list[TrailItem]


class ParkedEventOut(BaseModel):
    platform_id: str
    webhook_id: str
    event_type: str | None
    waiting_for: str | None
    received_at: datetime


class AnomalyOut(BaseModel):
    id: str
    platform_id: str
    webhook_id: str
    kind: str
    """`conflicting-event`, `event-does-not-match-order`, `placed-at-in-the-future` (refused, not kept: a
    corrected event may reuse the webhook id) or `over-refund` (applied: it reversed the rest of the
    donation)."""
    natural_key: str | None
    detail: str
    asked: MoneyOut | None
    """What the event asked for (an over-refund: the refund's amount)."""
    applied: MoneyOut | None
    """What of it took effect (an over-refund: what was left of the order's amount to refund)."""
    created_at: datetime
