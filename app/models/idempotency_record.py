from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class IdempotencyRecord(CreatedAt, Base):
    """The first answer to a create request sent with an `Idempotency-Key`, replayed for retries.

    The stored body is encrypted: create answers may carry a token or webhook secret shown only once."""

    __tablename__ = "idempotency_records"

    tenant: Mapped[str] = mapped_column(String(80), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    response_status: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    response_body_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, nullable=False)
