from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class AuditRun(Base):
    """One run of the ledger audit (`g4g audit`, `GET /v1/audit`, the console's button): when, by what, and
    whether it passed. Only the failed checks' names are kept, never their figures or examples."""

    __tablename__ = "audit_runs"
    __table_args__ = (CheckConstraint("via IN ('cli', 'console', 'api', 'job')", name="via"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    failed_checks: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    via: Mapped[str] = mapped_column(String(10), nullable=False)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
