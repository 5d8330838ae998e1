from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, UniqueConstraint, false
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
    # Opt-in public profile (`PATCH /v1/merchants/{id}`): its badge and its page `/m/{public_slug}`. The slug is
    # kept when the profile is switched off, so a page comes back at the same address.
    public_profile: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    public_slug: Mapped[str | None] = mapped_column(String(80), unique=True, nullable=True)
