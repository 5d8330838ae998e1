"""The settlement contract: billing profiles, runs, statements, FX rates and the funds view."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from app.core.money import MoneyIn, MoneyOut
from app.core.patterns import pattern
from app.core.types import Instant, Name

SETUP_INTENT_ID = pattern(r"^seti_[A-Za-z0-9]{1,250}$", "must be a Stripe SetupIntent id (seti_…)")
StripeCustomerId = Annotated[
    str,
    StringConstraints(pattern=pattern(r"^cus_[A-Za-z0-9]{1,250}$", "must be a Stripe customer id (cus_…)")),
]
# Digits with an optional fraction, not all zeros.
RATE_PATTERN = pattern(
    r"^(?=[0-9.]*[1-9])[0-9]{1,12}(\.[0-9]{1,12})?$",
    'must be a positive decimal string like "0.1385" (at most 12 digits either side of the point)',
)
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


class StripeBillingIn(BaseModel):
    """Link an existing Stripe customer (admin only): its metadata must name this merchant
    (`g4g_merchant_id`), and no other merchant may use it."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["stripe"]
    stripe_customer_id: StripeCustomerId


class BankTransferBillingIn(BaseModel):
    """Statements are paid by bank transfer, recorded by an admin (`POST /v1/statements/{id}/payments`)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["bank_transfer"]


BillingProfileIn = Annotated[StripeBillingIn | BankTransferBillingIn, Field(discriminator="method")]


class PaymentMethodOut(BaseModel):
    id: str
    label: str | None
    """For people, e.g. "visa •••• 4242"."""


class BillingProfileOut(BaseModel):
    merchant_id: str
    method: Literal["stripe", "bank_transfer"] | None
    """How its statements are paid; null until set up (statements then carry forward)."""
    stripe_customer_id: str | None
    payment_method: PaymentMethodOut | None
    """The card statements are charged to, once the merchant has added one."""


class SetupIntentOut(BaseModel):
    """Confirm `client_secret` with Stripe.js (`stripe.confirmCardSetup`), then call `…/complete`."""

    setup_intent_id: str
    client_secret: str
    customer_id: str
    publishable_key: str | None


class BankTransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: Name
    """The transfer's reference as the bank shows it."""
    amount: MoneyIn
    """Must equal the statement's open amount."""


class SettlementRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: Instant | None = None
    """Donations placed more than the return window before this instant are final. Default now; never later."""


class CarriedForward(BaseModel):
    merchant_id: str
    currency: str
    total: MoneyOut
    reason: Literal[
        "below_minimum",
        "below_stripe_minimum",
        "no_billing_profile",
        "exceeds_maximum",
        "exceeds_stripe_maximum",
    ]
    """`below_minimum`: under `G4G_MIN_INVOICE` (or negative); `below_stripe_minimum`: under the smallest charge
    Stripe takes in the currency; `exceeds_…`: an order's donation alone is more than one statement (or one
    Stripe charge) may carry; the operator must settle it another way (e.g. bank transfer)."""


class StatementLineOut(BaseModel):
    order_id: str
    kind: Literal["donation", "credit", "carried_in", "carried_out"]
    """`carried_out`: a remainder Stripe can't take in this currency's units, billed on the next statement as
    `carried_in`."""
    amount: MoneyOut


StatementStatus = Literal["pending_payment", "paid", "payment_failed", "needs_attention"]


class StatementOut(BaseModel):
    id: str
    run_id: str
    merchant_id: str
    currency: str
    as_of: datetime
    total: MoneyOut
    billing_method: Literal["stripe", "bank_transfer"]
    status: StatementStatus
    """`needs_attention`: charging again cannot help (see `last_payment_error`); the operator reopens it
    (`POST /v1/statements/{id}/reopen`) or records a bank transfer."""
    payment_attempts: int
    payment_intent_id: str | None
    last_payment_error: str | None
    paid_at: datetime | None
    paid_via: Literal["stripe", "bank_transfer"] | None
    payment_reference: str | None
    anomaly: str | None
    """Something about this statement's money the operator must see (e.g. it was paid twice)."""
    created_at: datetime


class StatementWithLines(StatementOut):
    lines: list[StatementLineOut]


class RunProgress(BaseModel):
    """How far the run's own statements got: charged means Stripe gave its final word (or they await a transfer)."""

    statements: int
    paid: int
    awaiting_payment: int
    """Bank-transfer statements, and Stripe ones whose charge is still in flight or failed (charged again later)."""
    needs_attention: int


class SettlementRunOut(BaseModel):
    id: str
    status: Literal["queued", "billing", "charging", "done", "failed"]
    """A run is a background job: `queued`, then `billing` (statements made), `charging` (Stripe statements
    charged), `done`; `failed` with `error` if it could not bill (it is retried)."""
    as_of: datetime
    statements: list[StatementOut]
    carried_forward: list[CarriedForward]
    progress: RunProgress
    error: str | None
    created_at: datetime
    finished_at: datetime | None


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
    package_kind_id: str
    available: MoneyOut
    cost: MoneyOut
    short_by: MoneyOut


class PackagedMoney(BaseModel):
    """Money in Love Packages (base currency), by where the boxes are. `allocated` is what left the pool for
    packages, less what cancelled shipments gave back; it equals the sum of the four stages exactly (the audit's
    `allocated_is_in_the_boxes`)."""

    allocated: MoneyOut
    in_transit: MoneyOut
    """Assigned to a student: shipment planned or on its way."""
    delivered: MoneyOut
    """Accepted by the school."""
    written_off: MoneyOut
    """Damaged or missing."""
    in_stock: MoneyOut
    """Came back; waits for a student of a later run (no new money is spent on it)."""
    released: MoneyOut
    """Given back to the pool by cancelled shipments (already counted in the pool again, not in `allocated`)."""


class FundsOut(BaseModel):
    as_of: datetime
    base_currency: str
    stages: list[StageTotals]
    """Minor units per currency: pledged (in the return window), final (window passed, not billed), billed
    (on unpaid statements), collected (paid), of which still unconverted; reversed beside them; credits owed."""
    pool: MoneyOut
    """Collected money in the base currency not yet in a package."""
    packages: PackagedMoney
    next_package: NextPackage | None
    """How far the pool is towards the next Love Package of the cheapest active kind; null without one."""
