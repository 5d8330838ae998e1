"""orders' statement index holds billed orders only

`ix_orders_statement_id` indexed every order, each unbilled one under NULL: recording an order added an entry that
no query looks up (unbilled orders are found through `ix_orders_unbilled_placed_at`). It now holds billed orders
only (`WHERE statement_id IS NOT NULL`); lookups by statement and the foreign key's checks use it as before, and
recording an order writes one index entry fewer.

Online-safe on a populated table: the partial index is built `CONCURRENTLY` beside the old one, the old one dropped
`CONCURRENTLY`, and the new one takes its name; writes go on throughout. A run stopped halfway can be run again (a
build that failed leaves an invalid index, dropped first).

Revision ID: b6e0d2f4a913
Revises: f3c9a1b5d7e2
Create Date: 2026-12-07 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "b6e0d2f4a913"
down_revision: str | None = "f3c9a1b5d7e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_orders_statement_id"
BUILDING = f"{INDEX}_building"


def _replace(where: str) -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {BUILDING}")
        op.execute(f"CREATE INDEX CONCURRENTLY {BUILDING} ON orders (statement_id){where}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(f"ALTER INDEX {BUILDING} RENAME TO {INDEX}")


def upgrade() -> None:
    _replace(" WHERE statement_id IS NOT NULL")


def downgrade() -> None:
    _replace("")
