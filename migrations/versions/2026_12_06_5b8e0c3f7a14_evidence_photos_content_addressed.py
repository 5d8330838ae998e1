"""evidence photos, content-addressed

Photo proof of delivery kept by the service (`POST /v1/shipments/{id}/evidence`): each image once, by the SHA-256
of its bytes, in a bytea column stored out of line and uncompressed (JPEG, PNG and WebP are compressed already, so
PostgreSQL's own compression would only cost time); and which shipment each was sent for, which decides who may
read it.

Revision ID: 5b8e0c3f7a14
Revises: 7e4a2c91d5b3
Create Date: 2026-12-06 03:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b8e0c3f7a14"
down_revision: str | None = "7e4a2c91d5b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evidence_blobs",
        sa.Column("sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("media_type", sa.String(length=20), nullable=False),
        sa.Column("byte_size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("octet_length(sha256) = 32", name=op.f("ck_evidence_blobs_sha256_length")),
        sa.CheckConstraint(
            "media_type IN ('image/jpeg', 'image/png', 'image/webp')",
            name=op.f("ck_evidence_blobs_media_type"),
        ),
        sa.CheckConstraint("byte_size = octet_length(content)", name=op.f("ck_evidence_blobs_byte_size")),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_evidence_blobs")),
    )
    op.execute("ALTER TABLE evidence_blobs ALTER COLUMN content SET STORAGE EXTERNAL")
    op.create_table(
        "shipment_evidence",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("shipment_id", sa.String(length=40), nullable=False),
        sa.Column("sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("api_key_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_shipment_evidence_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["sha256"], ["evidence_blobs.sha256"], name=op.f("fk_shipment_evidence_sha256_evidence_blobs")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipments.id"], name=op.f("fk_shipment_evidence_shipment_id_shipments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment_evidence")),
        sa.UniqueConstraint("shipment_id", "sha256", name=op.f("uq_shipment_evidence_shipment_id_sha256")),
    )
    op.create_index(op.f("ix_shipment_evidence_sha256"), "shipment_evidence", ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_shipment_evidence_sha256"), table_name="shipment_evidence")
    op.drop_table("shipment_evidence")
    op.drop_table("evidence_blobs")
