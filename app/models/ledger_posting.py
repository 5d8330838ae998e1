from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Identity, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class LedgerPosting(Base):
    """One leg of a ledger entry: a signed amount (debit positive, credit negative) on an account in a currency.
    The legs of an entry sum to zero in each currency; the database refuses anything else.

    Partitioned by month on `posted_at` (`app/core/partitions.py`), kept forever: the key includes it."""

    __tablename__ = "ledger_postings"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_ledger_postings_account", "account", "currency"),
        {"postgresql_partition_by": "RANGE (posted_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.id"), index=True, nullable=False)
    account: Mapped[str] = mapped_column(String(200), nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # The posting's transaction time; postings written before the table was partitioned read the conversion's.
    posted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, nullable=False, server_default=func.now()
    )
