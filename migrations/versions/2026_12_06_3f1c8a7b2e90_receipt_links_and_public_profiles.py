"""receipt links and merchants' public profiles

A buyer's receipt link per order (the token is never stored: its SHA-256 finds the row, and a per-link nonce lets
the service derive the same token again), and the merchant's opt-in public profile with the slug of its page.

Revision ID: 3f1c8a7b2e90
Revises: 8d1f4a6b2c07
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f1c8a7b2e90"
down_revision: str | None = "8d1f4a6b2c07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "receipt_links",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("nonce", sa.LargeBinary(length=16), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("show_merchant", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("order_reference", sa.String(length=100), nullable=True),
        sa.Column("notified_step", sa.String(length=20), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_receipt_links_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receipt_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_receipt_links_token_hash")),
    )
    op.create_index(op.f("ix_receipt_links_order_id"), "receipt_links", ["order_id"], unique=False)
    op.add_column(
        "merchants", sa.Column("public_profile", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("merchants", sa.Column("public_slug", sa.String(length=80), nullable=True))
    op.create_unique_constraint(op.f("uq_merchants_public_slug"), "merchants", ["public_slug"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_merchants_public_slug"), "merchants", type_="unique")
    op.drop_column("merchants", "public_slug")
    op.drop_column("merchants", "public_profile")
    op.drop_index(op.f("ix_receipt_links_order_id"), table_name="receipt_links")
    op.drop_table("receipt_links")
