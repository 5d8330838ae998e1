from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class WebhookEndpointSecret(CreatedAt, Base):
    """A secret events to an endpoint are signed with. The current one has no `expires_at`; after a rotation the
    old one keeps signing beside it until its `expires_at`. Stored encrypted with the data key."""

    __tablename__ = "webhook_endpoint_secrets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True, nullable=False
    )
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
