from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class DonationRule(CreatedAt, Base):
    """One version of a merchant's donation rule. Versions are never changed; a new one takes effect at its
    `effective_from`, and an order uses the version in effect at its `placed_at`."""

    __tablename__ = "donation_rules"
    __table_args__ = (
        CheckConstraint("rate_bps BETWEEN 0 AND 10000", name="rate_bps_range"),
        Index("ix_donation_rules_merchant_effective", "merchant_id", "effective_from"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    rate_bps: Mapped[int] = mapped_column(Integer, nullable=False)
    # [{"amount": 2, "currency": "CNY"}]
    fixed_per_unit: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    # [{"sku": "TEA-01", "rate_bps": 500, "fixed_per_unit": [...], "excluded": false}]
    sku_overrides: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    effective_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
