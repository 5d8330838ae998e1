from __future__ import annotations

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class WebhookAnomaly(CreatedAt, Base):
    """Something the operator must look at: an event that reused a natural key with other content, or a parked
    event that turned out invalid once what it waited for arrived. Never silently accepted or dropped."""

    __tablename__ = "webhook_anomalies"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), nullable=False)
    webhook_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    natural_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
