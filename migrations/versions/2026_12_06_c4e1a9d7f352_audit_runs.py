"""audit runs

One row per run of the ledger audit (`g4g audit`, `GET /v1/audit`, the console's button): when, by what
(and which key), whether it passed and the names of the checks that failed, for the console's overview.
A new small table: online-safe.

Revision ID: c4e1a9d7f352
Revises: b7d3f0a2c856
Create Date: 2026-12-06 19:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c4e1a9d7f352"
down_revision: str | None = "b7d3f0a2c856"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("failed_checks", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint("via IN ('cli', 'console', 'api', 'job')", name=op.f("ck_audit_runs_via")),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_audit_runs_key_id_api_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_runs")),
    )


def downgrade() -> None:
    op.drop_table("audit_runs")
