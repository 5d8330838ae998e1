from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt
from app.models.report_rollup import CURRENT_XID


class FxConversion(CreatedAt, Base):
    """Collected money of one statement turned into the base currency: the amounts, the rate used, and the
    part of a minor unit that half-even rounding left behind (an exact fraction, as text)."""

    __tablename__ = "fx_conversions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"), unique=True, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    base_currency: Mapped[str] = mapped_column(String(3), nullable=False)
    base_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fx_rate_id: Mapped[str | None] = mapped_column(ForeignKey("fx_rates.id"), nullable=True)
    rounding_difference: Mapped[str] = mapped_column(String(100), nullable=False)
    # The transaction that recorded it, for the public report's rollups (`app.reports.rollups`).
    recorded_xid: Mapped[int | None] = mapped_column(
        BigInteger, server_default=CURRENT_XID, nullable=True, index=True
    )
