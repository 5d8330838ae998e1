from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class StatementLine(Base):
    """A line of a statement: an order's final donation net of reversals (positive), a credit for what was
    reversed on an already billed order (negative), or a remainder Stripe could not take in its currency's units,
    carried out of one statement (negative) and into the merchant's next one (positive). A carried remainder
    names the order whose line absorbed it, so every line's money still belongs to an order."""

    __tablename__ = "statement_lines"
    __table_args__ = (
        CheckConstraint(
            "(kind IN ('donation', 'carried_in') AND amount > 0) OR (kind IN ('credit', 'carried_out') AND amount < 0)",
            name="kind_sign",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    statement_id: Mapped[str] = mapped_column(ForeignKey("statements.id"), index=True, nullable=False)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
