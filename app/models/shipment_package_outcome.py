from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class ShipmentPackageOutcome(Base):
    """What the school found in one box: part of a `receipt_confirmed` event (append-only like its event).
    Damaged and missing boxes say why."""

    __tablename__ = "shipment_package_outcomes"
    __table_args__ = (
        CheckConstraint("outcome IN ('accepted', 'damaged', 'missing')", name="outcome"),
        CheckConstraint("(outcome = 'accepted') = (reason IS NULL)", name="reason_for_write_offs"),
    )

    shipment_event_id: Mapped[str] = mapped_column(ForeignKey("shipment_events.id"), primary_key=True)
    package_id: Mapped[str] = mapped_column(ForeignKey("love_packages.id"), primary_key=True, index=True)
    outcome: Mapped[str] = mapped_column(String(10), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
