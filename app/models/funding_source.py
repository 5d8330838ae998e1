from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class FundingSource(CreatedAt, Base):
    """Money in the pool, attributed to the order it came from: the pool is a queue of these, spent oldest first.

    A statement's conversion into the base currency is split over the statement's lines exactly (largest
    remainder), one source per order; money a cancelled shipment gives back comes in again as new sources, still
    the same orders' money. Each source occupies `[start_offset, end_offset)` of the queue, in the order money
    entered the pool; packages take consecutive stretches from the front (`love_packages.funding_start/end`), so
    the part spent so far is `[0, Σ package cost)` and no order's money can be spent twice."""

    __tablename__ = "funding_sources"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("end_offset = start_offset + amount", name="offsets_span_amount"),
        CheckConstraint("kind IN ('collected', 'released')", name="kind"),
        Index("ix_funding_sources_end_offset", "end_offset", unique=True),
        # Which sources a package's stretch of the queue overlaps: whose money paid for it.
        Index(
            "ix_funding_sources_stretch",
            func.int8range(text("start_offset"), text("end_offset")),
            postgresql_using="gist",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"), index=True, nullable=False)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True, nullable=False)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True, nullable=False)
    # Set for money a cancelled shipment gave back: the package that held it.
    released_from_package_id: Mapped[str | None] = mapped_column(
        ForeignKey("love_packages.id"), nullable=True
    )
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    start_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
    end_offset: Mapped[int] = mapped_column(BigInteger, nullable=False)
