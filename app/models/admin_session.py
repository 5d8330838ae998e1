from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class AdminSession(CreatedAt, Base):
    """An operator signed in to the console (`/admin`) with an admin API key. Only the SHA-256 of the cookie's
    token is kept. Until `verified_at` the session only lets its holder give the second factor (a few minutes,
    a few tries); then it lasts `G4G_ADMIN_SESSION_MINUTES` from the last request (sliding), ends at sign-out,
    or as soon as its API key is revoked. A class list being previewed waits here, encrypted, until confirmed."""

    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, nullable=False)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    code_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    pending_import_school_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    pending_import_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
