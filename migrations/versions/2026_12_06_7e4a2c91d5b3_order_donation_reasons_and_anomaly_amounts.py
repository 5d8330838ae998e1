"""order donation reasons and anomaly amounts

An order that no rule applied to says why (`orders.donation_reason`): placed before the merchant's first rule
took effect, or no rule at all when it was recorded. Existing orders without a rule get the reason that fits
what the rules table holds now. Anomalies carry what an event asked for and what took effect (an over-refund),
are unique per (platform, webhook id, kind) so a refused event sent again is noted once, and are listed per
platform.

Revision ID: 7e4a2c91d5b3
Revises: dd08cc2629ae
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7e4a2c91d5b3"
down_revision: str | None = "dd08cc2629ae"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("donation_reason", sa.String(length=32), nullable=True))
    op.execute(
        """
        UPDATE orders o
        SET donation_reason = CASE
            WHEN EXISTS (SELECT 1 FROM donation_rules r WHERE r.merchant_id = o.merchant_id)
            THEN 'before-first-rule' ELSE 'no-rule-in-force' END
        WHERE o.rule_id IS NULL
        """
    )
    op.create_check_constraint(
        op.f("ck_orders_donation_reason_known"),
        "orders",
        "donation_reason IN ('before-first-rule', 'no-rule-in-force')",
    )
    op.add_column("webhook_anomalies", sa.Column("asked_amount", sa.BigInteger(), nullable=True))
    op.add_column("webhook_anomalies", sa.Column("applied_amount", sa.BigInteger(), nullable=True))
    op.add_column("webhook_anomalies", sa.Column("currency", sa.String(length=3), nullable=True))
    op.create_unique_constraint(
        op.f("uq_webhook_anomalies_platform_id_webhook_id_kind"),
        "webhook_anomalies",
        ["platform_id", "webhook_id", "kind"],
    )
    op.create_index(
        "ix_webhook_anomalies_platform_id_id", "webhook_anomalies", ["platform_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_anomalies_platform_id_id", table_name="webhook_anomalies")
    op.drop_constraint(
        op.f("uq_webhook_anomalies_platform_id_webhook_id_kind"), "webhook_anomalies", type_="unique"
    )
    op.drop_column("webhook_anomalies", "currency")
    op.drop_column("webhook_anomalies", "applied_amount")
    op.drop_column("webhook_anomalies", "asked_amount")
    op.drop_constraint(op.f("ck_orders_donation_reason_known"), "orders", type_="check")
    op.drop_column("orders", "donation_reason")
