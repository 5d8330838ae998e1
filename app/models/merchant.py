from __future__ import annotations

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class Merchant(CreatedAt, Base):
    """A seller on a platform, known to the platform by its own `external_id`."""

    __tablename__ = "merchants"
    __table_args__ = (UniqueConstraint("platform_id", "external_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), nullable=False)
    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)
    # Billing profile: the Stripe customer charged for this merchant's statements.
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
