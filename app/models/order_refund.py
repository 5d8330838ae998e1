from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt
from app.models.report_rollup import CURRENT_XID


class OrderRefund(CreatedAt, Base):
    """A refund of an order, once per (order, refund id), and the part of the donation it reversed."""

    __tablename__ = "order_refunds"
    __table_args__ = (
        UniqueConstraint("order_id", "refund_id"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("reversed_amount >= 0", name="reversed_not_negative"),
        Index("ix_order_refunds_recorded_xid", "recorded_xid", postgresql_using="brin"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), nullable=False)
    refund_id: Mapped[str] = mapped_column(String(200), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    reversed_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    # The transaction that recorded it, for the public report's rollups (`app.reports.rollups`).
    recorded_xid: Mapped[int | None] = mapped_column(BigInteger, server_default=CURRENT_XID, nullable=True)
