from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class WebhookAnomaly(CreatedAt, Base):
    """Something the operator and the sending platform must look at: an event that reused a natural key with
    other content, a parked event that turned out invalid once what it waited for arrived, an order placed too
    far ahead (refused), or a refund of more than was left (applied as the rest). Never silently accepted or
    dropped. One per webhook id and kind: an event refused without being kept may be sent again."""

    __tablename__ = "webhook_anomalies"
    __table_args__ = (
        UniqueConstraint("platform_id", "webhook_id", "kind"),
        Index("ix_webhook_anomalies_platform_id_id", "platform_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    platform_id: Mapped[str] = mapped_column(ForeignKey("platforms.id"), nullable=False)
    webhook_id: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    natural_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    # What the event asked for and what took effect, in minor units of `currency` (an over-refund).
    asked_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    applied_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
