from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class IdempotencyRecord(CreatedAt, Base):
    """The first answer to a create request sent with an `Idempotency-Key`, replayed for retries by the same API
    key (another key's requests are its own, even under the same `Idempotency-Key`).

    An answer that carries a secret shown once (a new API key's token, a webhook signing secret) is not kept: only
    the id of what it created, so a retry learns what exists but never sees the secret again. Other answers are
    kept encrypted all the same."""

    __tablename__ = "idempotency_records"
    __table_args__ = (
        CheckConstraint(
            "(response_body_encrypted IS NULL) <> (shown_once_resource_id IS NULL)", name="one_kind_of_answer"
        ),
    )

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    response_status: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    response_body_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    shown_once_resource_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The resource an answer with a secret created; its body is gone."""
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, nullable=False)
