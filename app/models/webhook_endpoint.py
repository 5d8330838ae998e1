from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class WebhookEndpoint(CreatedAt, Base):
    """Where a platform, a merchant or the programme (neither) wants events sent, and which ones.

    `failing_since` is the first failed attempt since the last success; an endpoint failing for days is disabled
    (`disabled_at`, with the reason its owner reads)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint("platform_id IS NULL OR merchant_id IS NULL", name="one_owner"),
        CheckConstraint("cardinality(events) > 0", name="events_not_empty"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str | None] = mapped_column(ForeignKey("platforms.id"), index=True, nullable=True)
    merchant_id: Mapped[str | None] = mapped_column(ForeignKey("merchants.id"), index=True, nullable=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    events: Mapped[list[str]] = mapped_column(ARRAY(String(64)), nullable=False)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(600), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
