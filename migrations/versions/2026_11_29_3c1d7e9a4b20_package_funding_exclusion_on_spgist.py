"""package funding exclusion on SP-GiST

The database's guarantee that no two packages' stretches of the pool queue overlap moves from a GiST to an
SP-GiST index: the same guarantee, and the same index for the order → packages lookups, at a lower cost per
inserted package (an allocation run of 50,000 packages spent most of its time maintaining the GiST index).

Revision ID: 3c1d7e9a4b20
Revises: 68998054b28a
Create Date: 2026-11-29 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "3c1d7e9a4b20"
down_revision: str | None = "68998054b28a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _exclusion(method: str) -> None:
    op.execute("ALTER TABLE love_packages DROP CONSTRAINT funding_never_overlaps")
    op.execute(
        "ALTER TABLE love_packages ADD CONSTRAINT funding_never_overlaps "
        f"EXCLUDE USING {method} (int8range(funding_start, funding_end) WITH &&)"
    )


def upgrade() -> None:
    _exclusion("spgist")


def downgrade() -> None:
    _exclusion("gist")
