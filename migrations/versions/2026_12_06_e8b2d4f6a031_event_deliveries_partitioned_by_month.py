"""event deliveries and their attempts partitioned by month on the delivery's id

A delivery's id is `dlv_` + its event's ULID + its endpoint's: its first ten characters after the prefix are the
event's millisecond, so a range of ids is a range of time. `event_deliveries` is partitioned by range on `id` and
`event_delivery_attempts` on `delivery_id`, with the same monthly bounds: a delivery and its attempts sit in the
same month, the keys stay as they were (a lookup by id reads one partition), and retention drops a month's
attempts and deliveries whole (`app/events/service.py`).

- The unique `(event_id, endpoint_id)` goes: the id is made from exactly those two, so the primary key already
  makes it unique (a unique key on a partitioned table must include its partition column). A plain index on
  them stays, for the cascade from `events`.
- An attempt's primary key becomes `(delivery_id, id)`, which also serves the reads by delivery (the index on
  `delivery_id` alone goes).
- The attempts' foreign key to their delivery goes. A month of a table that others refer to can only be
  detached after a check that reads the whole month under an exclusive lock on the parent (measured: 0.9 s for
  300,000 deliveries, every insert of a delivery waiting), and adding the key to the new parent would read
  every attempt with new deliveries waiting (0.7 s at 1 M). Attempts go with their delivery's month instead,
  and deleting an endpoint deletes its attempts with its deliveries (`app/events/repository.py`).

Online-safe on populated tables, as d5a1c3e7f920 for the ledger: indexes the new keys need are built
`CONCURRENTLY` and the bound checks added `NOT VALID` then validated, outside a transaction; then one short
transaction renames the old tables to `*_history`, creates the partitioned parents and attaches the old tables
`FROM (MINVALUE)` without a scan; the months to three ahead and a default partition are made
(`bench/partitions.py` measures it).

Revision ID: e8b2d4f6a031
Revises: d5a1c3e7f920
Create Date: 2026-12-06 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alembic import op

from app.core.partitions import (
    PARTITIONED,
    Partition,
    add_months,
    create_month_sql,
    month_start,
    months_to_make,
)

revision: str = "e8b2d4f6a031"
down_revision: str | None = "d5a1c3e7f920"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERIES = "event_deliveries"
ATTEMPTS = "event_delivery_attempts"


def upgrade() -> None:
    month = add_months(month_start(datetime.now(UTC) + timedelta(days=1)), 1)
    boundary = PARTITIONED[DELIVERIES].bound(month)

    with op.get_context().autocommit_block():
        op.execute(
            f"CREATE INDEX CONCURRENTLY {DELIVERIES}_history_event_idx ON {DELIVERIES} (event_id, endpoint_id)"
        )
        op.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {ATTEMPTS}_history_key ON {ATTEMPTS} (delivery_id, id)")
        for table, column in ((DELIVERIES, "id"), (ATTEMPTS, "delivery_id")):
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_history_bound CHECK ({column} < {boundary}) NOT VALID"
            )
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {table}_history_bound")

    # The foreign keys made on the new parent lock the tables they refer to against writes: lock those first, in
    # the order a writer takes them (an event, then its deliveries), or a writer holding an event waits on us as
    # we wait on it.
    op.execute("LOCK TABLE webhook_endpoints, events IN SHARE ROW EXCLUSIVE MODE")
    op.execute(f"LOCK TABLE {DELIVERIES}, {ATTEMPTS} IN ACCESS EXCLUSIVE MODE")
    # The attempts: the new key from the prebuilt index, and no foreign key to their delivery (see above).
    op.execute(
        f"ALTER TABLE {ATTEMPTS} DROP CONSTRAINT fk_event_delivery_attempts_delivery_id_event_deliveries"
    )
    op.execute(f"ALTER TABLE {ATTEMPTS} DROP CONSTRAINT pk_event_delivery_attempts")
    op.execute(
        f"ALTER TABLE {ATTEMPTS} ADD CONSTRAINT {ATTEMPTS}_history_pkey PRIMARY KEY USING INDEX {ATTEMPTS}_history_key"
    )
    op.execute("DROP INDEX ix_event_delivery_attempts_delivery_id")
    op.execute(f"ALTER TABLE {ATTEMPTS} RENAME TO {ATTEMPTS}_history")
    # The deliveries: same key; their index names are freed for the parent's.
    op.execute(f"ALTER TABLE {DELIVERIES} DROP CONSTRAINT uq_event_deliveries_event_id_endpoint_id")
    op.execute(f"ALTER TABLE {DELIVERIES} RENAME CONSTRAINT pk_event_deliveries TO {DELIVERIES}_history_pkey")
    op.execute(f"ALTER INDEX ix_event_deliveries_due RENAME TO {DELIVERIES}_history_due_idx")
    op.execute(f"ALTER INDEX ix_event_deliveries_endpoint RENAME TO {DELIVERIES}_history_endpoint_idx")
    op.execute(f"ALTER TABLE {DELIVERIES} RENAME TO {DELIVERIES}_history")

    op.execute(
        f"""
        CREATE TABLE {DELIVERIES} (
            id varchar(60) NOT NULL,
            event_id varchar(40) NOT NULL,
            endpoint_id varchar(40) NOT NULL,
            status varchar(16) NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            schedule integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz,
            lease_until timestamptz,
            last_attempt_at timestamptz,
            delivered_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_event_deliveries PRIMARY KEY (id),
            CONSTRAINT ck_event_deliveries_status CHECK (status IN ('pending', 'delivered', 'failed')),
            CONSTRAINT fk_event_deliveries_endpoint_id_webhook_endpoints
                FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
            CONSTRAINT fk_event_deliveries_event_id_events
                FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE
        ) PARTITION BY RANGE (id)
        """
    )
    op.execute(
        f"CREATE INDEX ix_event_deliveries_due ON {DELIVERIES} (next_attempt_at) WHERE status = 'pending'"
    )
    op.execute(f"CREATE INDEX ix_event_deliveries_endpoint ON {DELIVERIES} (endpoint_id, id)")
    op.execute(f"CREATE INDEX ix_event_deliveries_event ON {DELIVERIES} (event_id, endpoint_id)")
    op.execute(
        f"""
        CREATE TABLE {ATTEMPTS} (
            id varchar(40) NOT NULL,
            delivery_id varchar(60) NOT NULL,
            attempted_at timestamptz NOT NULL,
            trigger varchar(16) NOT NULL,
            succeeded boolean NOT NULL,
            status_code smallint,
            duration_ms integer NOT NULL,
            error varchar(500),
            response_body text,
            next_attempt_at timestamptz,
            CONSTRAINT pk_event_delivery_attempts PRIMARY KEY (delivery_id, id)
        ) PARTITION BY RANGE (delivery_id)
        """
    )
    for table in (DELIVERIES, ATTEMPTS):
        op.execute(
            f"ALTER TABLE {table} ATTACH PARTITION {table}_history FOR VALUES FROM (MINVALUE) TO ({boundary})"
        )
        op.execute(f"ALTER TABLE {table}_history DROP CONSTRAINT {table}_history_bound")
        for made in months_to_make([Partition(f"{table}_history", None, month)], now=datetime.now(UTC)):
            op.execute(create_month_sql(table, made))
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")


def downgrade() -> None:
    raise NotImplementedError("partitioned event deliveries are not converted back; restore from a backup")
