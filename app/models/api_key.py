from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class ApiKey(CreatedAt, Base):
    """A bearer credential. Only the SHA-256 of the token is kept; the token is shown once at creation."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'platform', 'merchant', 'logistics')", name="role"),
        CheckConstraint(
            "(role = 'admin' AND platform_id IS NULL AND merchant_id IS NULL AND logistics_partner_id IS NULL)"
            " OR (role = 'platform' AND platform_id IS NOT NULL AND merchant_id IS NULL"
            " AND logistics_partner_id IS NULL)"
            " OR (role = 'merchant' AND merchant_id IS NOT NULL AND platform_id IS NULL"
            " AND logistics_partner_id IS NULL)"
            " OR (role = 'logistics' AND logistics_partner_id IS NOT NULL AND platform_id IS NULL"
            " AND merchant_id IS NULL)",
            name="scope_matches_role",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    token_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    platform_id: Mapped[str | None] = mapped_column(ForeignKey("platforms.id"), nullable=True)
    merchant_id: Mapped[str | None] = mapped_column(ForeignKey("merchants.id"), nullable=True)
    logistics_partner_id: Mapped[str | None] = mapped_column(
        ForeignKey("logistics_partners.id"), nullable=True
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
