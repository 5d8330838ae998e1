from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class StatementCarryover(CreatedAt, Base):
    """Part of a statement's total that Stripe could not take exactly (a fraction of its currency's unit in
    Stripe): billed on the merchant's next statement in that currency instead."""

    __tablename__ = "statement_carryovers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index(
            "ix_statement_carryovers_pending",
            "merchant_id",
            "currency",
            postgresql_where=text("into_statement_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), nullable=False)
    from_statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"), nullable=False)
    into_statement_id: Mapped[str | None] = mapped_column(ForeignKey("statements.id"), nullable=True)
