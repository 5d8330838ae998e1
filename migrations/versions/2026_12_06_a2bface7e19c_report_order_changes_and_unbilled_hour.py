"""the public report: every change of an order's reversed total, and one hour of unbilled orders

Two gaps in the rollups of 9e3b7c5a1d28. A cancellation sets `orders.reversed_amount` without a refund row, so
the rollups never saw it: now a trigger records every change of an order's reversed total (a refund, a
cancellation, anything that writes the column) in `report_order_changes`, which the catch-up folds in and empties.
And the report split unbilled orders into pledged and final by the hour: a partial index on the unbilled orders'
`placed_at` lets it read the one hour the boundary falls in and split it exactly.

Online-safe on a populated database: the table and trigger are new (the trigger only fires on later updates), and
the partial index holds only unbilled orders (the last weeks'): built inside the migration's transaction, as the
BRIN indexes before it, writes to `orders` wait for one scan of the table and a sort of its unbilled rows (not
measured here). The watermark is dropped, so the first refresh after this rebuilds the rollups from every order
(once; "first refresh" in docs/scaling.md's figures): cancellations they missed are counted again.

Revision ID: a2bface7e19c
Revises: c4e1a9d7f352
Create Date: 2026-12-06 18:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a2bface7e19c"
down_revision: str | None = "c4e1a9d7f352"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_XID = "(pg_current_xact_id()::text)::bigint"


def upgrade() -> None:
    op.create_table(
        "report_order_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("reversed_change", sa.BigInteger(), nullable=False),
        sa.Column("recorded_xid", sa.BigInteger(), server_default=sa.text(CURRENT_XID), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_order_changes")),
    )
    op.execute(
        """
        CREATE FUNCTION orders_record_reversed_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO report_order_changes (order_id, reversed_change)
            VALUES (NEW.id, NEW.reversed_amount - OLD.reversed_amount);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER orders_record_reversed_change AFTER UPDATE OF reversed_amount ON orders
            FOR EACH ROW WHEN (OLD.reversed_amount IS DISTINCT FROM NEW.reversed_amount)
            EXECUTE FUNCTION orders_record_reversed_change()
        """
    )
    op.create_index(
        "ix_orders_unbilled_placed_at",
        "orders",
        ["placed_at"],
        unique=False,
        postgresql_where=sa.text("statement_id IS NULL"),
    )
    op.execute("DELETE FROM report_watermarks WHERE name = 'transparency'")


def downgrade() -> None:
    op.drop_index(
        "ix_orders_unbilled_placed_at", table_name="orders", postgresql_where=sa.text("statement_id IS NULL")
    )
    op.execute("DROP TRIGGER orders_record_reversed_change ON orders")
    op.execute("DROP FUNCTION orders_record_reversed_change()")
    op.drop_table("report_order_changes")
    op.execute("DELETE FROM report_watermarks WHERE name = 'transparency'")
