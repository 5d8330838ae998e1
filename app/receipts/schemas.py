from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.core.money import MoneyOut
from app.core.patterns import pattern

Step = Literal[
    "pledged", "refunded", "final", "collected", "in_pool", "packaged", "shipped", "delivered", "confirmed"
]


class ReceiptLinkIn(BaseModel):
    """What the platform chooses to show its buyer. Asking again with other choices changes them, not the link."""

    model_config = ConfigDict(extra="forbid")
    show_merchant: StrictBool = True
    """Show the merchant's name (as the platform registered it)."""
    order_reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        pattern=pattern(r"^[^\x00-\x1f]+$", "must be text without control characters"),
    )
    """An order reference of the platform's choosing, shown as sent; none is shown unless sent."""


class ReceiptLinkOut(BaseModel):
    url: str
    """`/r/{token}`, on this service."""
    full_url: str
    """The link with the service's public origin: what to put in the order confirmation, and what the QR code
    says."""
    qr_svg: str
    """The QR code of the full URL, as SVG."""
    qr_png: str
    created_at: datetime


class TimelineStep(BaseModel):
    step: Step
    done: bool
    at: datetime | None
    """When it happened (for a step of several packages: the first time it happened to one of them)."""
    expected_by: datetime | None = None
    """For a step still to come: roughly when, where the programme's schedule says (the return window)."""
    amount: MoneyOut | None = None
    """`refunded`: the donation reversed; `in_pool`: what reached the pool (in the programme's currency)."""
    packages: int | None = None
    """`packaged` and later: of how many packages this step is done."""


class ReceiptPackage(BaseModel):
    share: MoneyOut
    """This order's money in the package (from the funding lineage)."""
    cost: MoneyOut
    grade: str | None
    country: str | None
    region: str | None
    """Shown only where the public report shows the region's students reached (never a small count)."""
    status: str
    allocated_at: datetime
    shipped_at: datetime | None
    delivered_at: datetime | None
    confirmed_at: datetime | None


class NextStep(BaseModel):
    step: Step
    expected_by: datetime | None
    """Roughly when, if the programme's schedule says; null when it depends on the next allocation run or on
    the journey."""


class ReceiptOut(BaseModel):
    merchant: str | None
    order_reference: str | None
    donation: MoneyOut
    reversed: MoneyOut
    net: MoneyOut
    step: Step
    """The latest step reached."""
    timeline: list[TimelineStep]
    packages: list[ReceiptPackage]
    next: NextStep | None
