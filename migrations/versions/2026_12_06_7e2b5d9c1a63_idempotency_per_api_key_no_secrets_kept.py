"""idempotency per API key, no secrets kept

An `Idempotency-Key` belongs to the API key that sent it, not to its whole tenant (every admin key shared one), so
another key never replays an answer meant for the first. An answer carrying a secret shown once keeps only the id of
what it created (`shown_once_resource_id`), never the body.

Stored answers cannot be given an API key after the fact, so the upgrade forgets them (they live 48 hours by
default): a retry that spans the upgrade is a new request.

Revision ID: 7e2b5d9c1a63
Revises: 3c1d7e9a4b20
Create Date: 2026-12-06 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7e2b5d9c1a63"
down_revision: str | None = "3c1d7e9a4b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_records")
    op.drop_constraint(op.f("pk_idempotency_records"), "idempotency_records", type_="primary")
    op.drop_column("idempotency_records", "tenant")
    op.add_column("idempotency_records", sa.Column("api_key_id", sa.String(length=40), nullable=False))
    op.create_primary_key(op.f("pk_idempotency_records"), "idempotency_records", ["api_key_id", "key"])
    op.create_foreign_key(
        op.f("fk_idempotency_records_api_key_id_api_keys"),
        "idempotency_records",
        "api_keys",
        ["api_key_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.alter_column("idempotency_records", "response_body_encrypted", existing_type=sa.Text(), nullable=True)
    op.add_column(
        "idempotency_records", sa.Column("shown_once_resource_id", sa.String(length=64), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_idempotency_records_one_kind_of_answer"),
        "idempotency_records",
        "(response_body_encrypted IS NULL) <> (shown_once_resource_id IS NULL)",
    )


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_records")
    op.drop_constraint(
        op.f("ck_idempotency_records_one_kind_of_answer"), "idempotency_records", type_="check"
    )
    op.drop_column("idempotency_records", "shown_once_resource_id")
    op.alter_column("idempotency_records", "response_body_encrypted", existing_type=sa.Text(), nullable=False)
    op.drop_constraint(
        op.f("fk_idempotency_records_api_key_id_api_keys"), "idempotency_records", type_="foreignkey"
    )
    op.drop_constraint(op.f("pk_idempotency_records"), "idempotency_records", type_="primary")
    op.drop_column("idempotency_records", "api_key_id")
    op.add_column("idempotency_records", sa.Column("tenant", sa.String(length=80), nullable=False))
    op.create_primary_key(op.f("pk_idempotency_records"), "idempotency_records", ["tenant", "key"])
