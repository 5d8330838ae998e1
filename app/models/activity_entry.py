from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class ActivityEntry(Base):
    """Who did what: one change made with an API key (through the API or the console), or a key created or
    revoked (from the CLI too). Append-only: the database refuses UPDATE, DELETE and TRUNCATE on this table.

    The acting key is copied (name, role, tenant) as it was at the time, so the entry reads the same whatever
    happens to the key later. Never a token, a secret or a roster code: `details` holds ids and small figures."""

    __tablename__ = "activity_entries"
    __table_args__ = (
        CheckConstraint("via IN ('api', 'console', 'cli')", name="via"),
        # Only the CLI acts without a key (the operator at the server's shell, e.g. creating the first key).
        CheckConstraint("key_id IS NOT NULL OR via = 'cli'", name="key_unless_cli"),
        CheckConstraint(
            "key_role IS NULL OR key_role IN ('admin', 'platform', 'merchant', 'logistics')", name="key_role"
        ),
        Index("ix_activity_entries_resource", "resource_type", "resource_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    via: Mapped[str] = mapped_column(String(10), nullable=False)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id"), index=True, nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    key_role: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The acting key's tenant, so a platform can be shown its own keys' entries.
    key_platform_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    key_merchant_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    key_logistics_partner_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    action: Mapped[str] = mapped_column(String(80), index=True, nullable=False)
    resource_type: Mapped[str] = mapped_column(String(40), nullable=False)
    resource_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The merchant whose resource was changed (its rule, its settings, its order's receipt link…), so that
    # merchant can be shown what was done to it.
    merchant_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
