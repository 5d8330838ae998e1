"""Tables partitioned by month (PostgreSQL declarative range partitioning).

Each month is one partition named `<table>_<yyyy>_<mm>`, from the first instant of the month (UTC) to the next:
on a timestamp column, or on a time-ordered id (`prefix_` + a ULID, whose first ten characters are its
millisecond), bounded by the smallest id of the month's first instant.
A table converted from a populated one keeps its old rows in `<table>_history` (from MINVALUE to the first
month made after it), and every table has a `<table>_default` partition that catches a row no month was made
for: the daily job (`ensure_months_ahead`) keeps three months made ahead, so the default stays empty, and the
audit reports it if it is not.

Retention (where a table has any) drops whole partitions: no row-by-row DELETE, no WAL for the rows, no bloat."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from ulid import ULID


@dataclass(frozen=True, slots=True)
class Monthly:
    """A table partitioned by month on `column`: a timestamp, or an id `<id_prefix>_<ULID>`."""

    table: str
    column: str
    id_prefix: str | None = None

    def bound(self, month: datetime) -> str:
        """The partition bound (an SQL literal) where `month` starts."""
        if self.id_prefix is None:
            return f"'{month.isoformat()}'"
        return f"'{self.id_prefix}_{str(ULID.from_timestamp(month.timestamp()))[:10]}{'0' * 16}'"

    def moment(self, bound: str) -> datetime:
        """The instant a bound read back from the catalog (`pg_get_expr`, under `TimeZone = UTC`) stands for."""
        value = bound.strip("'")
        if self.id_prefix is None:
            return datetime.fromisoformat(value).astimezone(UTC)
        time_part = value[len(self.id_prefix) + 1 :][:10]
        return ULID.from_str(time_part + "0" * 16).datetime.astimezone(UTC)


# Each partitioned table, parents before the tables that reference them.
PARTITIONED: dict[str, Monthly] = {
    m.table: m
    for m in (
        Monthly("ledger_postings", "posted_at"),
        Monthly("event_deliveries", "id", id_prefix="dlv"),
        Monthly("event_delivery_attempts", "delivery_id", id_prefix="dlv"),
        Monthly("webhook_deliveries", "received_at"),
    )
}
# How many months beyond the current one are kept made ahead.
MONTHS_AHEAD = 3
# Creating a partition takes a brief lock on the parent: never wait long behind a long query for it.
LOCK_TIMEOUT = "5s"

_BOUND = re.compile(r"FOR VALUES FROM \((?P<lower>[^)]*)\) TO \((?P<upper>[^)]*)\)")


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the month holding `moment`."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(month: datetime, count: int) -> datetime:
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table}_{month.year:04d}_{month.month:02d}"


def create_month_sql(table: str, month: datetime) -> str:
    """The statement making `table`'s partition for `month` (the names and bounds come from this module only)."""
    key = PARTITIONED[table]
    return (
        f"CREATE TABLE {partition_name(table, month)} PARTITION OF {table} "
        f"FOR VALUES FROM ({key.bound(month)}) TO ({key.bound(add_months(month, 1))})"
    )


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lower: datetime | None  # None: MINVALUE
    upper: datetime | None  # None: the default partition


def _bound(key: Monthly, value: str) -> datetime | None:
    return None if value == "MINVALUE" else key.moment(value)


PARTITIONS_SQL = """
    SELECT c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(:table)
"""


def parse_partitions(table: str, rows: list[tuple[str, str]]) -> list[Partition]:
    """Partitions from `PARTITIONS_SQL`'s rows (read under `TimeZone = UTC`), oldest first, the default last."""
    found = []
    for name, bound in rows:
        match = _BOUND.fullmatch(bound)
        if match is None:  # DEFAULT
            found.append(Partition(name, None, None))
        else:
            key = PARTITIONED[table]
            found.append(Partition(name, _bound(key, match["lower"]), _bound(key, match["upper"])))
    far = datetime.max.replace(tzinfo=UTC)
    least = datetime.min.replace(tzinfo=UTC)
    return sorted(found, key=lambda p: (p.upper is None, p.upper or far, p.lower or least))


async def partitions(session: AsyncSession, table: str) -> list[Partition]:
    await session.execute(text("SET LOCAL TimeZone = 'UTC'"))
    rows = (await session.execute(text(PARTITIONS_SQL), {"table": table})).all()
    return parse_partitions(table, [(row.name, row.bound) for row in rows])


def months_to_make(existing: list[Partition], *, now: datetime, ahead: int = MONTHS_AHEAD) -> list[datetime]:
    """The months after the last one made, up to `ahead` months beyond `now`'s: contiguous, never overlapping."""
    uppers = [p.upper for p in existing if p.upper is not None]
    first = max(uppers) if uppers else month_start(now)
    last = add_months(month_start(now), ahead)
    months = []
    month = first
    while month <= last:
        months.append(month)
        month = add_months(month, 1)
    return months


async def ensure_months_ahead(session: AsyncSession, table: str, *, now: datetime) -> list[str]:
    """Make the partitions `table` is missing up to `MONTHS_AHEAD` months ahead; the names it made. A month whose
    rows already sit in the default partition fails here (the audit reports those rows): move them first."""
    made = []
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    for month in months_to_make(await partitions(session, table), now=now):
        await session.execute(text(create_month_sql(table, month)))
        await after_create(session, table, partition_name(table, month))
        made.append(partition_name(table, month))
    return made


def after_create_sql(table: str, partition: str) -> list[str]:
    """What a new partition of `table` needs beyond what PostgreSQL copies from the parent: the ledger's
    append-only trigger is a statement trigger, which partitions don't inherit, so a partition named directly
    (`DELETE FROM ledger_postings_2027_01`) refuses too. A month of the inbox keeps a webhook id once: the
    parent's key must hold `received_at`, which would let two deliveries of one id in one month both be
    written; this index of the month's own refuses the second (and is an arbiter of the inbox's
    `ON CONFLICT DO NOTHING`, which names no target)."""
    if table == "webhook_deliveries":
        return [f"CREATE UNIQUE INDEX {partition}_webhook_key ON {partition} (platform_id, webhook_id)"]
    if table == "ledger_postings":
        return [
            f"CREATE TRIGGER {partition}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {partition} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        ]
    return []


async def after_create(session: AsyncSession, table: str, partition: str) -> None:
    for statement in after_create_sql(table, partition):
        await session.execute(text(statement))


async def rows_in_default(session: AsyncSession) -> list[dict[str, object]]:
    """Each partitioned table whose default partition holds rows (no month was made for them in time)."""
    found: list[dict[str, object]] = []
    for table in PARTITIONED:
        query = f"SELECT count(*) FROM {table}_default"  # noqa: S608 - names from PARTITIONED
        count = (await session.execute(text(query))).scalar_one()
        if count:
            found.append({"table": table, "rows": count})
    return found


def same_month(existing: list[Partition], of: Partition) -> Partition | None:
    """The partition of another table with `of`'s bounds (tables partitioned together, as deliveries and their
    attempts)."""
    return next((p for p in existing if (p.lower, p.upper) == (of.lower, of.upper)), None)


async def detach(session: AsyncSession, table: str, partition: str) -> None:
    """Take `partition` out of `table` (a brief exclusive lock on the parent, bounded by `LOCK_TIMEOUT`). The
    caller drops it once it has looked inside, in the same transaction: a rollback puts it back."""
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
    await session.execute(text(f"ALTER TABLE {table} DETACH PARTITION {partition}"))
