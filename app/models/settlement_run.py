from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class SettlementRun(CreatedAt, Base):
    """One settlement run, a background job: queued, billing, charging, done (or failed, with the error). What it
    billed and what it carried forward and why are in `summary`."""

    __tablename__ = "settlement_runs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'billing', 'charging', 'done', 'failed')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, server_default="done")
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
