from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedAt


class AdminFactor(CreatedAt, Base):
    """An admin key's second factor: a TOTP secret (RFC 6238), encrypted with the data key. Unconfirmed until the
    operator typed a code from it once; `last_used_step` is the time step of the last code accepted, so a code is
    never accepted twice (nor an older one). `failed_attempts` counts wrong codes in a row across sign-ins (a
    code accepted sets it back to 0); at `G4G_ADMIN_FACTOR_MAX_FAILURES` the factor is locked (`locked_at`) until
    an operator unlocks it (`g4g admin-factor unlock`)."""

    __tablename__ = "admin_factors"

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    locked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AdminRecoveryCode(CreatedAt, Base):
    """A one-time recovery code of an admin key's second factor: only its SHA-256 is kept; used once, then spent."""

    __tablename__ = "admin_recovery_codes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True, nullable=False)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
