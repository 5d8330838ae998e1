from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class ShipmentEvidence(CreatedAt, Base):
    """A photo sent as evidence for one shipment: who may read it follows the shipment (its partner and the
    programme). The same image for the same shipment is one row (sending it again answers with this one)."""

    __tablename__ = "shipment_evidence"
    __table_args__ = (UniqueConstraint("shipment_id", "sha256"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipments.id"), nullable=False)
    sha256: Mapped[bytes] = mapped_column(ForeignKey("evidence_blobs.sha256"), index=True, nullable=False)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), nullable=False)
