from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class School(CreatedAt, Base):
    """A school whose students receive Love Packages, served by one logistics partner.

    `registration_number` is the order of registration, which allocation's round-robin follows (ids are
    time-ordered too, but not strictly within one millisecond or across processes). The teacher contact is
    personal data of an adult, stored only encrypted with the data key."""

    __tablename__ = "schools"
    __table_args__ = (Index("ix_schools_country_registration", "country", "registration_number"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    registration_number: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)
    region: Mapped[str] = mapped_column(String(200), nullable=False)
    logistics_partner_id: Mapped[str] = mapped_column(
        ForeignKey("logistics_partners.id"), index=True, nullable=False
    )
    # Fernet token of {"name", "phone"?, "email"?} as JSON.
    teacher_contact_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )
