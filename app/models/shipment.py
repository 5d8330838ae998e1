from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt

SHIPMENT_STATUSES = (
    "planned",
    "handed_over",
    "in_transit",
    "customs_hold",
    "out_for_delivery",
    "delivered",
    "receipt_confirmed",
    "delivery_failed",
    "returning",
    "returned",
    "cancelled",
)


class Shipment(CreatedAt, Base):
    """One school's packages from one allocation run, carried by the school's logistics partner."""

    __tablename__ = "shipments"
    __table_args__ = (
        CheckConstraint(f"status IN {SHIPMENT_STATUSES}", name="status"),
        Index("ix_shipments_partner_status", "logistics_partner_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("allocation_runs.id"), index=True, nullable=False)
    school_id: Mapped[str] = mapped_column(ForeignKey("schools.id"), index=True, nullable=False)
    logistics_partner_id: Mapped[str] = mapped_column(ForeignKey("logistics_partners.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    # When the current status took effect: the `occurred_at` of the event that set it (creation, for `planned`).
    # An event that occurred before it is kept in history and changes nothing (`app.logistics.machine`).
    status_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The latest `occurred_at` of any event (or creation): `stale=true` lists shipments with no event for a while.
    last_event_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
