from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class PlatformWebhookSecret(CreatedAt, Base):
    """A secret a platform signs its webhooks with. The current one has no `expires_at`; a rotated-out one
    stays valid until its `expires_at`. Stored encrypted with the data key, never in clear."""

    __tablename__ = "platform_webhook_secrets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), index=True, nullable=False)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
