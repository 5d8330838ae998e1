from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class Merchant(CreatedAt, Base):
    """A seller on a platform, known to the platform by its own `external_id`."""

    __tablename__ = "merchants"
    __table_args__ = (
        UniqueConstraint("platform_id", "external_id"),
        CheckConstraint("billing_method IN ('stripe', 'bank_transfer')", name="billing_method"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), nullable=False)
    external_id: Mapped[str] = mapped_column(String(200), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)
    # Billing profile: how its statements are paid. `stripe`: charged off-session to the Stripe customer the
    # service created for it (or an admin linked, named in its metadata), one merchant per customer;
    # `bank_transfer`: paid by transfer and recorded by an admin. None: not set up yet.
    billing_method: Mapped[str | None] = mapped_column(String(20), nullable=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    stripe_payment_method_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # e.g. "visa •••• 4242": what the merchant sees on its billing page
    stripe_payment_method_label: Mapped[str | None] = mapped_column(String(100), nullable=True)
