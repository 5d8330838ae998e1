from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class PackageFunding(Base):
    """Whose money paid for a package: a part of one funding source (an order's money). A package's rows sum to
    its cost exactly; a source's rows never exceed its amount."""

    __tablename__ = "package_funding"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    package_id: Mapped[str] = mapped_column(ForeignKey("love_packages.id"), index=True, nullable=False)
    source_id: Mapped[int] = mapped_column(ForeignKey("funding_sources.id"), nullable=False)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True, nullable=False)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True, nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
