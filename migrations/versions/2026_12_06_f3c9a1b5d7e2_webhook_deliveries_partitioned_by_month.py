"""the order inbox partitioned by month on `received_at`

`webhook_deliveries` becomes partitioned by range on `received_at`, a partition a month, so retention drops a
month whole (`app/donations/tasks.py`). Its primary key becomes `(platform_id, webhook_id, received_at)`: a
unique key of a partitioned table includes its partition column. Each month (and the old rows, and the default
partition) keeps its own unique index on `(platform_id, webhook_id)`, so the database still refuses a second row
for a webhook id within a month. Exactly-once across months is kept by the inbox: its read looks for an earlier
delivery in every partition, and a batch received near the start of a month also locks its webhook ids, so two
deliveries of one id can't both claim it in two months (`app/donations/ingest.py`).

Online-safe on a populated table, as d5a1c3e7f920 for the ledger: the unique index the new key needs is built
`CONCURRENTLY` and the bound check added `NOT VALID` then validated, outside a transaction; one short
transaction then renames the old table to `webhook_deliveries_history`, creates the partitioned parent and
attaches the old table `FROM (MINVALUE)` without a scan (its indexes adopted, not rebuilt); the months to three
ahead and a default partition are made.

Revision ID: f3c9a1b5d7e2
Revises: e8b2d4f6a031
Create Date: 2026-12-06 21:40:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alembic import op

from app.core.partitions import (
    PARTITIONED,
    Partition,
    add_months,
    after_create_sql,
    create_month_sql,
    month_start,
    months_to_make,
    partition_name,
)

revision: str = "f3c9a1b5d7e2"
down_revision: str | None = "e8b2d4f6a031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INBOX = "webhook_deliveries"
HISTORY = "webhook_deliveries_history"


def upgrade() -> None:
    month = add_months(month_start(datetime.now(UTC) + timedelta(days=1)), 1)
    boundary = PARTITIONED[INBOX].bound(month)

    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY {HISTORY}_key ON {INBOX} (platform_id, webhook_id, received_at)"
        )
        # The old key, kept for the rows it holds once the primary key includes `received_at`.
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY {HISTORY}_webhook_key ON {INBOX} (platform_id, webhook_id)"
        )
        op.execute(
            f"ALTER TABLE {INBOX} ADD CONSTRAINT {HISTORY}_bound CHECK (received_at < {boundary}) NOT VALID"
        )
        op.execute(f"ALTER TABLE {INBOX} VALIDATE CONSTRAINT {HISTORY}_bound")

    # The parent's foreign key locks the platforms against writes: first, as a writer would take them.
    op.execute("LOCK TABLE platforms IN SHARE ROW EXCLUSIVE MODE")
    op.execute(f"LOCK TABLE {INBOX} IN ACCESS EXCLUSIVE MODE")
    op.execute(f"ALTER TABLE {INBOX} DROP CONSTRAINT pk_webhook_deliveries")
    op.execute(f"ALTER TABLE {INBOX} ADD CONSTRAINT {HISTORY}_pkey PRIMARY KEY USING INDEX {HISTORY}_key")
    op.execute(f"ALTER INDEX ix_webhook_deliveries_parked RENAME TO {HISTORY}_parked_idx")
    op.execute(f"ALTER INDEX ix_webhook_deliveries_settled_received RENAME TO {HISTORY}_settled_received_idx")
    op.execute(f"ALTER TABLE {INBOX} RENAME TO {HISTORY}")
    op.execute(
        f"""
        CREATE TABLE {INBOX} (
            platform_id varchar(40) NOT NULL,
            webhook_id varchar(255) NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            event_type varchar(64),
            natural_key varchar(500),
            body bytea NOT NULL,
            status varchar(16) NOT NULL,
            waiting_for varchar(300),
            response_status smallint,
            response_body jsonb,
            settled_at timestamptz,
            CONSTRAINT pk_webhook_deliveries PRIMARY KEY (platform_id, webhook_id, received_at),
            CONSTRAINT ck_webhook_deliveries_status
                CHECK (status IN ('processing', 'applied', 'parked', 'duplicate', 'conflict', 'rejected')),
            CONSTRAINT fk_webhook_deliveries_platform_id_platforms
                FOREIGN KEY (platform_id) REFERENCES platforms (id)
        ) PARTITION BY RANGE (received_at)
        """
    )
    op.execute(
        f"CREATE INDEX ix_webhook_deliveries_parked ON {INBOX} (platform_id, waiting_for) WHERE status = 'parked'"
    )
    op.execute(
        f"CREATE INDEX ix_webhook_deliveries_settled_received ON {INBOX} (received_at) "
        "WHERE status NOT IN ('parked', 'processing')"
    )
    op.execute(f"ALTER TABLE {INBOX} ATTACH PARTITION {HISTORY} FOR VALUES FROM (MINVALUE) TO ({boundary})")
    op.execute(f"ALTER TABLE {HISTORY} DROP CONSTRAINT {HISTORY}_bound")
    for made in months_to_make([Partition(HISTORY, None, month)], now=datetime.now(UTC)):
        op.execute(create_month_sql(INBOX, made))
        for statement in after_create_sql(INBOX, partition_name(INBOX, made)):
            op.execute(statement)
    op.execute(f"CREATE TABLE {INBOX}_default PARTITION OF {INBOX} DEFAULT")
    for statement in after_create_sql(INBOX, f"{INBOX}_default"):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the partitioned inbox is not converted back; restore from a backup")
