"""package stretches follow each other

The database's guarantee that no two packages share a unit of the pool queue changes from an exclusion
constraint (a range-index probe per inserted package, most of a 50,000-package run's time) to a chain: each
package's stretch starts where another package's ends, or at 0 (`follows_end`, a foreign key to the unique
`funding_end`), and no two start at the same place (the unique `funding_start`). Since a stretch ends after it
starts, the packages then tile `[0, Σ cost)` one after another: no overlap, and no gap either. The range index
stays, as a plain SP-GiST index, for the order → packages lookups.

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


def upgrade() -> None:
    op.execute("ALTER TABLE love_packages DROP CONSTRAINT funding_never_overlaps")
    op.execute(
        "CREATE INDEX ix_love_packages_funding_stretch ON love_packages "
        "USING spgist (int8range(funding_start, funding_end))"
    )
    op.execute("ALTER TABLE love_packages ADD CONSTRAINT uq_love_packages_funding_end UNIQUE (funding_end)")
    op.execute(
        "ALTER TABLE love_packages ADD COLUMN follows_end bigint "
        "GENERATED ALWAYS AS (NULLIF(funding_start, 0)) STORED"
    )
    op.execute(
        "ALTER TABLE love_packages ADD CONSTRAINT fk_love_packages_follows_end_love_packages "
        "FOREIGN KEY (follows_end) REFERENCES love_packages (funding_end)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE love_packages DROP CONSTRAINT fk_love_packages_follows_end_love_packages")
    op.execute("ALTER TABLE love_packages DROP COLUMN follows_end")
    op.execute("ALTER TABLE love_packages DROP CONSTRAINT uq_love_packages_funding_end")
    op.execute("DROP INDEX ix_love_packages_funding_stretch")
    op.execute(
        "ALTER TABLE love_packages ADD CONSTRAINT funding_never_overlaps "
        "EXCLUDE USING gist (int8range(funding_start, funding_end) WITH &&)"
    )
