from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class EventDeliveryAttempt(Base):
    """One try at sending a delivery: what the receiver answered (the start of its body, bounded), how long it
    took, what went wrong, and when the next try is due."""

    __tablename__ = "event_delivery_attempts"
    # Partitioned as its delivery, by month on `delivery_id` (`app/core/partitions.py`).
    __table_args__ = {"postgresql_partition_by": "RANGE (delivery_id)"}

    # No foreign key: a referenced month couldn't be detached without a check that reads it all under a lock
    # (migration e8b2d4f6a031). Attempts go with their delivery's month, or with its endpoint.
    delivery_id: Mapped[str] = mapped_column(String(60), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)  # scheduled | replay
    succeeded: Mapped[bool] = mapped_column(Boolean, nullable=False)
    status_code: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    response_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
