from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class FundingSource(CreatedAt, Base):
    """Money in the pool, attributed to the order it came from: the pool is a queue of these, spent oldest first.

    A statement's conversion into the base currency is split over the statement's lines exactly (largest
    remainder), one source per order; money a cancelled shipment gives back comes in again as new sources, still
    the same orders' money. Each source occupies `[start_offset, end_offset)` of the queue, in the order money
    entered the pool; packages are funded from the front, so the part of the queue spent so far is
    `[0, Σ package funding)` and no order's money can be spent twice."""

    __tablename__ = "funding_sources"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("end_offset = start_offset + amount", name="offsets_span_amount"),
        CheckConstraint("kind IN ('collected', 'released')", name="kind"),
        Index("ix_funding_sources_end_offset", "end_offset", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"), index=True, nullable=False)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True, nullable=False)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    # Set for money a cancelled shipment gave back: the package that held it.
    released_from_package_id: Mapped[str | None] = mapped_column(
        ForeignKey("love_packages.id"), nullable=True
    )
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    start_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
