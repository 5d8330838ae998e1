"""admin factor failures and lock

Each admin key's second factor counts wrong codes in a row across sign-ins (`failed_attempts`) and is locked
(`locked_at`) after `G4G_ADMIN_FACTOR_MAX_FAILURES` of them, until an operator unlocks it
(`g4g admin-factor unlock`). Online-safe: a NOT NULL column with a constant default and a nullable one are
catalogue-only changes (no table rewrite).

Revision ID: b7d3f0a2c856
Revises: 9e3b7c5a1d28
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d3f0a2c856"
down_revision: str | None = "9e3b7c5a1d28"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "admin_factors", sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("admin_factors", sa.Column("locked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("admin_factors", "locked_at")
    op.drop_column("admin_factors", "failed_attempts")
