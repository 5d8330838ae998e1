"""auth failure counts

Wrong API keys counted per ten seconds by client address and by key prefix, so that sign-in and the API can refuse
a caller that keeps guessing (429 with Retry-After) across every server process. UNLOGGED: the counts are
throwaway, so they cost no write-ahead log and vanish after a crash.

Revision ID: dd08cc2629ae
Revises: 7e2b5d9c1a63
Create Date: 2026-12-05 23:54:38
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "dd08cc2629ae"
down_revision: str | None = "7e2b5d9c1a63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "auth_failure_counts",
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.CheckConstraint("scope IN ('address', 'key')", name=op.f("ck_auth_failure_counts_scope")),
        sa.CheckConstraint("failures > 0", name=op.f("ck_auth_failure_counts_failures_positive")),
        sa.PrimaryKeyConstraint("scope", "subject", "bucket", name=op.f("pk_auth_failure_counts")),
        prefixes=["UNLOGGED"],
    )
    op.create_index(op.f("ix_auth_failure_counts_bucket"), "auth_failure_counts", ["bucket"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_auth_failure_counts_bucket"), table_name="auth_failure_counts")
    op.drop_table("auth_failure_counts")
