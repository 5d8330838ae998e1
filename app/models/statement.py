from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class Statement(CreatedAt, Base):
    """The invoice document on our side: one merchant's final donations in one currency, net of credits, billed
    once and charged through Stripe (one PaymentIntent per attempt, keyed by statement and attempt)."""

    __tablename__ = "statements"
    __table_args__ = (
        CheckConstraint("total > 0", name="total_positive"),
        CheckConstraint("status IN ('pending_payment', 'paid', 'payment_failed')", name="status"),
        Index("ix_statements_merchant", "merchant_id", "currency"),
        Index("ix_statements_unpaid", "status", postgresql_where=text("status <> 'paid'")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("settlement_runs.id"), nullable=False)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    total: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    payment_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_payment_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # While a charge is in flight, other runs leave the statement alone; a crash mid-charge frees it at expiry.
    charging_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
