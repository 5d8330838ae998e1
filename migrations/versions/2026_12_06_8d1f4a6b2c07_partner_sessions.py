"""partner sessions

The field app's device sessions (`/partner`): a logistics partner signed in with one of its API keys, for
`G4G_PARTNER_SESSION_DAYS`; only the SHA-256 of the cookie's token is kept.

Revision ID: 8d1f4a6b2c07
Revises: 5b8e0c3f7a14
Create Date: 2026-12-06 03:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8d1f4a6b2c07"
down_revision: str | None = "5b8e0c3f7a14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "partner_sessions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("logistics_partner_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_partner_sessions_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["logistics_partner_id"],
            ["logistics_partners.id"],
            name=op.f("fk_partner_sessions_logistics_partner_id_logistics_partners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_partner_sessions_token_hash")),
    )
    op.create_index(op.f("ix_partner_sessions_api_key_id"), "partner_sessions", ["api_key_id"], unique=False)
    op.create_index(op.f("ix_partner_sessions_expires_at"), "partner_sessions", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_partner_sessions_expires_at"), table_name="partner_sessions")
    op.drop_index(op.f("ix_partner_sessions_api_key_id"), table_name="partner_sessions")
    op.drop_table("partner_sessions")
