from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class LedgerEntry(CreatedAt, Base):
    """One balanced movement of money, naming its cause. Never updated or deleted: corrections are new entries."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_cause", "cause_type", "cause_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # order_paid | order_refunded | order_cancelled (later: statement, allocation, shipment_event, …)
    cause_type: Mapped[str] = mapped_column(String(40), nullable=False)
    cause_id: Mapped[str] = mapped_column(String(300), nullable=False)
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id"), index=True, nullable=True)
    memo: Mapped[str] = mapped_column(String(300), nullable=False)
