from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class WebhookDelivery(Base):
    """The inbox: every order webhook that passed the signature check, once per (platform, webhook id), with the
    answer it got. Parked deliveries wait here for what they need (`waiting_for`) and are applied from here.

    Partitioned by month on `received_at` (`app/core/partitions.py`), which the key must then include: the
    inbox itself keeps a webhook id once across months (`app/donations/ingest.py`)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('processing', 'applied', 'parked', 'duplicate', 'conflict', 'rejected')",
            name="status",
        ),
        Index(
            "ix_webhook_deliveries_parked",
            "platform_id",
            "waiting_for",
            postgresql_where=text("status = 'parked'"),
        ),
        # The retention sweep deletes settled deliveries oldest first, in batches.
        Index(
            "ix_webhook_deliveries_settled_received",
            "received_at",
            postgresql_where=text("status NOT IN ('parked', 'processing')"),
        ),
        {"postgresql_partition_by": "RANGE (received_at)"},
    )

    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True, nullable=False, server_default=func.now()
    )
    event_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    natural_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    waiting_for: Mapped[str | None] = mapped_column(String(300), nullable=True)
    response_status: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
