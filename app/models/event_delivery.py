from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class EventDelivery(CreatedAt, Base):
    """One event for one endpoint. Its id is the `webhook-id` of every attempt, so a retry or a replay is
    recognisably the same message.

    `schedule` counts the times an attempt was scheduled: a job carries the number it was enqueued with and does
    nothing unless it is still current, so a job that runs twice (a worker killed mid-job) or late (superseded by
    a replay) sends nothing more. `lease_until` keeps two workers from sending the same attempt at once.

    Partitioned by month on the id (its event's ULID is its time; `app/core/partitions.py`), as its attempts are
    on `delivery_id`: retention drops a month of both."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        # (event_id, endpoint_id) is unique by construction: the id is made of them (see below).
        Index("ix_event_deliveries_event", "event_id", "endpoint_id"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        Index("ix_event_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_event_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        {"postgresql_partition_by": "RANGE (id)"},
    )

    # `dlv_` + the event's ULID + the endpoint's: one per (event, endpoint) by construction, time-ordered.
    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), nullable=False)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    schedule: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
