from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class PartnerSession(CreatedAt, Base):
    """A logistics partner's device signed in to the field app (`/partner`) with one of its API keys. Only the
    SHA-256 of the cookie's token is kept; the session ends at `expires_at` (`G4G_PARTNER_SESSION_DAYS`), at
    sign-out, or as soon as its API key is revoked."""

    __tablename__ = "partner_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True, nullable=False)
    logistics_partner_id: Mapped[str] = mapped_column(ForeignKey("logistics_partners.id"), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, nullable=False)
