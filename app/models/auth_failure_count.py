from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class AuthFailureCount(Base):
    """Wrong API keys (on the API and at the dashboard's sign-in) counted per ten seconds, by the client's address
    and by the key's first characters; `app.core.auth_failures` reads the last minute of them. UNLOGGED: the counts
    are worth nothing after a crash, so they skip the write-ahead log (and replicas)."""

    __tablename__ = "auth_failure_counts"
    __table_args__ = (
        CheckConstraint("scope IN ('address', 'key')", name="scope"),
        CheckConstraint("failures > 0", name="failures_positive"),
        {"prefixes": ["UNLOGGED"]},
    )

    scope: Mapped[str] = mapped_column(String(10), primary_key=True)
    # An address (IPv6: its /64), or a digest of a key's first characters: never the characters themselves.
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True, index=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
