"""the public report's rollups, kept from a watermark

Small rows the transparency figures are read from (unbilled orders by hour, statements' orders by month and
stage, billed orders by month and stage, merchants that gave), the watermark up to which they fold changes in,
and the transaction ids that let `app.reports.rollups` find the changes: a column defaulting to the writing
transaction's id on orders, refunds, statements and conversions, and a trigger stamping a statement's status
change. Online-safe on a populated database: the columns are added without a default (no table rewrite) and get
it after (it applies to new rows only; older rows are folded in by the first full rebuild), and the BRIN indexes
on the two large tables take one scan each. The rollups are filled by the first refresh (or `g4g audit`).

Revision ID: 9e3b7c5a1d28
Revises: 6c2e8b1f9d45
Create Date: 2026-12-06 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e3b7c5a1d28"
down_revision: str | None = "6c2e8b1f9d45"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_XID = "(pg_current_xact_id()::text)::bigint"
STAMPED = [
    ("orders", "recorded_xid"),
    ("order_refunds", "recorded_xid"),
    ("fx_conversions", "recorded_xid"),
    ("statements", "recorded_xid"),
    ("statements", "status_xid"),
]


def upgrade() -> None:
    op.create_table(
        "report_watermarks",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_report_watermarks")),
    )
    op.create_table(
        "report_unbilled_cells",
        sa.Column("placed_hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("fully_reversed", sa.Boolean(), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("reversed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "placed_hour", "currency", "fully_reversed", name=op.f("pk_report_unbilled_cells")
        ),
    )
    op.create_table(
        "report_statement_cells",
        sa.Column("statement_id", sa.String(length=40), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stage", sa.String(length=10), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("reversed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("statement_id", "month", "currency", name=op.f("pk_report_statement_cells")),
    )
    op.create_table(
        "report_billed_cells",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stage", sa.String(length=10), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("net", sa.BigInteger(), nullable=False),
        sa.Column("reversed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("month", "currency", "stage", name=op.f("pk_report_billed_cells")),
    )
    op.create_table(
        "report_merchants",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_report_merchants")),
    )
    for table, column in STAMPED:
        op.add_column(table, sa.Column(column, sa.BigInteger(), nullable=True))
        op.alter_column(table, column, server_default=sa.text(CURRENT_XID))
    op.create_index(op.f("ix_fx_conversions_recorded_xid"), "fx_conversions", ["recorded_xid"], unique=False)
    op.create_index(op.f("ix_statements_recorded_xid"), "statements", ["recorded_xid"], unique=False)
    op.create_index(op.f("ix_statements_status_xid"), "statements", ["status_xid"], unique=False)
    op.execute(
        f"""
        CREATE FUNCTION statements_stamp_status_xid() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.status_xid := {CURRENT_XID};
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER statements_stamp_status_xid BEFORE UPDATE OF status ON statements
            FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
            EXECUTE FUNCTION statements_stamp_status_xid()
        """
    )
    # BRIN indexes: a single scan to build (no sort), next to nothing to keep up on insert. Built inside the
    # migration's transaction (its advisory lock serialises concurrent migrators), so writes to the two tables
    # wait for the scan: seconds per ten million orders.
    op.create_index(
        "ix_orders_recorded_xid", "orders", ["recorded_xid"], unique=False, postgresql_using="brin"
    )
    op.create_index(
        "ix_order_refunds_recorded_xid",
        "order_refunds",
        ["recorded_xid"],
        unique=False,
        postgresql_using="brin",
    )


def downgrade() -> None:
    op.drop_index("ix_order_refunds_recorded_xid", table_name="order_refunds")
    op.drop_index("ix_orders_recorded_xid", table_name="orders")
    op.execute("DROP TRIGGER statements_stamp_status_xid ON statements")
    op.execute("DROP FUNCTION statements_stamp_status_xid()")
    op.drop_index(op.f("ix_statements_status_xid"), table_name="statements")
    op.drop_index(op.f("ix_statements_recorded_xid"), table_name="statements")
    op.drop_index(op.f("ix_fx_conversions_recorded_xid"), table_name="fx_conversions")
    for table, column in reversed(STAMPED):
        op.drop_column(table, column)
    op.drop_table("report_merchants")
    op.drop_table("report_billed_cells")
    op.drop_table("report_statement_cells")
    op.drop_table("report_unbilled_cells")
    op.drop_table("report_watermarks")
