from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.shipment import SHIPMENT_STATUSES

EVENT_STATUSES = tuple(status for status in SHIPMENT_STATUSES if status != "planned")


class ShipmentEvent(Base):
    """One tracking event a shipment received, in the order it was recorded: the shipment's history.

    Append-only (the database refuses updates and deletes). Unique per shipment by the poster's `event_id`: the
    same id again is answered from this row. `result` says whether it moved the shipment (`applied`) or was only
    kept (`recorded`: it happened before the current status, or repeats it); `status_before`/`status_after` make
    the first answer reproducible. The proof of delivery names a person, so it is stored encrypted."""

    __tablename__ = "shipment_events"
    __table_args__ = (
        UniqueConstraint("shipment_id", "event_id"),
        CheckConstraint(f"status IN {EVENT_STATUSES}", name="status"),
        CheckConstraint("result IN ('applied', 'recorded')", name="result"),
        CheckConstraint(
            "(result = 'applied' AND reason IS NULL) OR (result = 'recorded'"
            " AND reason IN ('older_than_current_status', 'repeats_current_status'))",
            name="reason",
        ),
        CheckConstraint("posted_by IN ('logistics_partner', 'programme')", name="posted_by"),
        CheckConstraint("(status = 'delivered') = (proof_encrypted IS NOT NULL)", name="proof_on_delivery"),
        CheckConstraint("octet_length(content_hash) = 32", name="content_hash_length"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The order events were recorded in (ids are only roughly time-ordered within a millisecond).
    sequence: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True, nullable=False)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), nullable=False)
    event_id: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    location: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # Fernet token of the proof as JSON ({receiver_name, receiver_role, evidence: {url, sha256}, gps?}).
    proof_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[str] = mapped_column(String(10), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status_before: Mapped[str] = mapped_column(String(20), nullable=False)
    status_after: Mapped[str] = mapped_column(String(20), nullable=False)
    posted_by: Mapped[str] = mapped_column(String(20), nullable=False)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), nullable=False)
    # Keyed hash (the lookup key) of the event's content as validated: the same event id with other content is a
    # conflict, the same content a retry.
    content_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
