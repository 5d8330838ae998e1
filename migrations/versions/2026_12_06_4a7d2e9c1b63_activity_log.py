"""activity log

Who did what: every change made with an API key (through the API or the console) and every key created or
revoked, append-only — the database refuses UPDATE, DELETE and TRUNCATE on it, as on the ledger.

Revision ID: 4a7d2e9c1b63
Revises: 3f1c8a7b2e90
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "4a7d2e9c1b63"
down_revision: str | None = "3f1c8a7b2e90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity_entries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("key_name", sa.String(length=200), nullable=True),
        sa.Column("key_role", sa.String(length=20), nullable=True),
        sa.Column("key_platform_id", sa.String(length=40), nullable=True),
        sa.Column("key_merchant_id", sa.String(length=40), nullable=True),
        sa.Column("key_logistics_partner_id", sa.String(length=40), nullable=True),
        sa.Column("action", sa.String(length=80), nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=True),
        sa.Column("merchant_id", sa.String(length=40), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint("via IN ('api', 'console', 'cli')", name=op.f("ck_activity_entries_via")),
        sa.CheckConstraint(
            "key_id IS NOT NULL OR via = 'cli'", name=op.f("ck_activity_entries_key_unless_cli")
        ),
        sa.CheckConstraint(
            "key_role IS NULL OR key_role IN ('admin', 'platform', 'merchant', 'logistics')",
            name=op.f("ck_activity_entries_key_role"),
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_activity_entries_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity_entries")),
    )
    op.create_index(op.f("ix_activity_entries_action"), "activity_entries", ["action"], unique=False)
    op.create_index(op.f("ix_activity_entries_key_id"), "activity_entries", ["key_id"], unique=False)
    op.create_index(
        op.f("ix_activity_entries_key_platform_id"), "activity_entries", ["key_platform_id"], unique=False
    )
    op.create_index(
        op.f("ix_activity_entries_merchant_id"), "activity_entries", ["merchant_id"], unique=False
    )
    op.create_index(
        "ix_activity_entries_resource", "activity_entries", ["resource_type", "resource_id"], unique=False
    )
    # Append-only, enforced by the database itself (its own function, so it doesn't hang on the ledger's).
    op.execute(
        """
        CREATE FUNCTION activity_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the activity log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER activity_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON activity_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION activity_refuse_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER activity_entries_append_only ON activity_entries")
    op.execute("DROP FUNCTION activity_refuse_change()")
    op.drop_index("ix_activity_entries_resource", table_name="activity_entries")
    op.drop_index(op.f("ix_activity_entries_merchant_id"), table_name="activity_entries")
    op.drop_index(op.f("ix_activity_entries_key_platform_id"), table_name="activity_entries")
    op.drop_index(op.f("ix_activity_entries_key_id"), table_name="activity_entries")
    op.drop_index(op.f("ix_activity_entries_action"), table_name="activity_entries")
    op.drop_table("activity_entries")
