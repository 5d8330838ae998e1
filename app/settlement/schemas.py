"""The settlement contract: billing profiles, runs, statements, FX rates and the funds view."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, WithJsonSchema

from app.core.money import MoneyOut
from app.core.types import Instant

StripeCustomerId = Annotated[str, StringConstraints(pattern=r"^cus_[A-Za-z0-9]{1,250}$")]
# Digits with an optional fraction, not all zeros.
RATE_PATTERN = r"^(?=[0-9.]*[1-9])[0-9]{1,12}(\.[0-9]{1,12})?$"
_RATE = re.compile(RATE_PATTERN)


def _positive_decimal(value: str) -> str:
    if not _RATE.match(value):
        raise ValueError(
            'a positive decimal string like "0.1385" (at most 12 digits either side of the point)'
        )
    try:
        if Decimal(value) <= 0:
            raise ValueError("must be greater than zero")
    except InvalidOperation:
        raise ValueError("not a decimal number") from None
    return value


RateString = Annotated[
    str,
    AfterValidator(_positive_decimal),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": RATE_PATTERN,
            "description": "Decimal, > 0",
            "example": "0.1385",
        }
    ),
]


class BillingProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stripe_customer_id: StripeCustomerId


class BillingProfileOut(BaseModel):
    merchant_id: str
    stripe_customer_id: str | None


class SettlementRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: Instant | None = None
    """Donations placed more than the return window before this instant are final. Default now; never later."""


class CarriedForward(BaseModel):
    merchant_id: str
    currency: str
    total: MoneyOut
    reason: Literal["below_minimum", "no_billing_profile"]


class StatementLineOut(BaseModel):
    order_id: str
    kind: Literal["donation", "credit"]
    amount: MoneyOut


StatementStatus = Literal["pending_payment", "paid", "payment_failed"]


class StatementOut(BaseModel):
    id: str
    run_id: str
    merchant_id: str
    currency: str
    as_of: datetime
    total: MoneyOut
    status: StatementStatus
    payment_attempts: int
    payment_intent_id: str | None
    last_payment_error: str | None
    paid_at: datetime | None
    created_at: datetime


class StatementWithLines(StatementOut):
    lines: list[StatementLineOut]


class SettlementRunOut(BaseModel):
    id: str
    as_of: datetime
    statements: list[StatementOut]
    carried_forward: list[CarriedForward]
    created_at: datetime


class FxRateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: RateString
    """Units of the base currency that one unit of this currency buys, e.g. CNY→USD "0.1385"."""


class FxRateOut(BaseModel):
    id: str
    currency: str
    base_currency: str
    rate: str
    created_at: datetime


class StageTotals(BaseModel):
    currency: str
    pledged: int
    final: int
    billed: int
    collected: int
    collected_unconverted: int
    reversed: int
    credits_due: int


class NextPackage(BaseModel):
    available: MoneyOut
    cost: MoneyOut


class FundsOut(BaseModel):
    as_of: datetime
    base_currency: str
    stages: list[StageTotals]
    """Minor units per currency: pledged (in the return window), final (window passed, not billed), billed
    (on unpaid statements), collected (paid), of which still unconverted; reversed beside them; credits owed."""
    pool: MoneyOut
    next_package: NextPackage | None
    """How far the pool is towards the next Love Package; null until a package kind exists."""
