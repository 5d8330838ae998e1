from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class FxRate(CreatedAt, Base):
    """How many units of the base currency one unit of `currency` buys, from `created_at` on. History is kept;
    the newest row is the rate in force."""

    __tablename__ = "fx_rates"
    __table_args__ = (
        CheckConstraint("rate > 0", name="rate_positive"),
        Index("ix_fx_rates_currency_created", "currency", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    base_currency: Mapped[str] = mapped_column(String(3), nullable=False)
    rate: Mapped[Decimal] = mapped_column(Numeric(30, 12), nullable=False)
