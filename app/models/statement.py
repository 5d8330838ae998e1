from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt
from app.models.report_rollup import CURRENT_XID


class Statement(CreatedAt, Base):
    """The invoice document on our side: one merchant's final donations in one currency, net of credits, billed
    once and charged through Stripe (one PaymentIntent per attempt, keyed by statement and attempt)."""

    __tablename__ = "statements"
    __table_args__ = (
        CheckConstraint("total > 0", name="total_positive"),
        CheckConstraint(
            "status IN ('pending_payment', 'paid', 'payment_failed', 'needs_attention')", name="status"
        ),
        CheckConstraint("billing_method IN ('stripe', 'bank_transfer')", name="billing_method"),
        CheckConstraint("paid_via IS NULL OR paid_via IN ('stripe', 'bank_transfer')", name="paid_via"),
        Index("ix_statements_merchant", "merchant_id", "currency"),
        Index("ix_statements_unpaid", "status", postgresql_where=text("status <> 'paid'")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("settlement_runs.id"), nullable=False)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    total: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # Fixed when the statement is made: only `stripe` statements are charged automatically.
    billing_method: Mapped[str] = mapped_column(String(20), nullable=False, server_default="stripe")
    # pending_payment → paid | payment_failed (charged again by a later run, a new attempt) | needs_attention
    # (the operator must act: Stripe refused the request itself, the card needs its holder, an amount mismatch).
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    payment_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When the current attempt was first sent: its idempotency key is safe to repeat for 24 hours only.
    attempt_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The current attempt's PaymentIntent, once Stripe named it: retrieved before anything is created again.
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_payment_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    paid_via: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The bank transfer's reference, for a statement paid by transfer.
    payment_reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Something about this statement's money the operator must see, e.g. a second payment for it.
    anomaly: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # While a charge is in flight, other runs leave the statement alone; a crash mid-charge frees it at expiry.
    charging_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # For the public report's rollups (`app.reports.rollups`): the transaction that billed it, and the last one
    # that changed its status (set by a trigger, whichever code changes it).
    recorded_xid: Mapped[int | None] = mapped_column(
        BigInteger, server_default=CURRENT_XID, index=True, nullable=True
    )
    status_xid: Mapped[int | None] = mapped_column(
        BigInteger, server_default=CURRENT_XID, index=True, nullable=True
    )
