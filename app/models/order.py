from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt
from app.models.report_rollup import CURRENT_XID


class Order(CreatedAt, Base):
    """A paid order and its donation: one per (platform, the platform's order id), whatever webhook carried it.

    `refunded_amount` and `reversed_amount` are running totals kept beside the ledger for fast reads;
    `g4g audit` checks them against the ledger postings."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("platform_id", "external_id"),
        CheckConstraint("donation_amount >= 0", name="donation_not_negative"),
        CheckConstraint("reversed_amount BETWEEN 0 AND donation_amount", name="reversed_within_donation"),
        CheckConstraint("refunded_amount >= 0", name="refunded_not_negative"),
        CheckConstraint(
            "donation_reason IN ('before-first-rule', 'no-rule-in-force')", name="donation_reason_known"
        ),
        Index("ix_orders_merchant_placed", "merchant_id", "placed_at"),
        Index("ix_orders_recorded_xid", "recorded_xid", postgresql_using="brin"),
        # The public report reads one hour of unbilled orders (`app.reports.rollups.cells`); small, as unbilled
        # orders are the last weeks' only.
        Index("ix_orders_unbilled_placed_at", "placed_at", postgresql_where=text("statement_id IS NULL")),
        # Billed orders only: an unbilled order is never looked up by its (absent) statement.
        Index("ix_orders_statement_id", "statement_id", postgresql_where=text("statement_id IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), nullable=False)
    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    base_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    donation_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rule_id: Mapped[str | None] = mapped_column(ForeignKey("donation_rules.id"), nullable=True)
    # Why no rule applied (then the donation is 0): placed before the merchant's first rule took effect, or the
    # merchant had no rule at all when the order was recorded. None when a rule applied.
    donation_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reversed_amount: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Settlement: the statement that billed this order, and how much of its reversed total settlement has
    # accounted for (by billing only the net, then by credits on later statements).
    statement_id: Mapped[str | None] = mapped_column(ForeignKey("statements.id"), nullable=True)
    settled_reversed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    # SHA-256 of the order.paid data as first applied: another event with the same key must match it.
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    # The transaction that recorded it, for the public report's rollups (`app.reports.rollups`).
    recorded_xid: Mapped[int | None] = mapped_column(BigInteger, server_default=CURRENT_XID, nullable=True)
