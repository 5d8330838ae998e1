"""Partitioning benchmark (issue 22 point 3): converting populated tables to monthly partitions, and retention
by dropping a month against deleting it.

    nice -n 19 .venv/bin/python bench/partitions.py [--rows 1000000] [--month-rows 300000]

Makes a fresh database on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it to the revision before the partitioning, and bulk-loads `--rows` ledger postings (half as many
balanced entries), `--rows` events, each with one delivery and one attempt, and `--rows` settled inbox rows
(600-byte bodies), spread over the last 90 days; then VACUUM ANALYZE. Then it runs each conversion (`alembic
upgrade` to the ledger's revision, then the events', then the inbox's) while a writer inserts into the table
being converted in a loop, one short transaction at a time, and reports:

- how long the conversion took,
- the longest the writer was seen waiting for a lock meanwhile (polled every 2 ms in `pg_stat_activity`): how
  long the conversion's locks held writes up,
- the longest a single insert took meanwhile, next to the longest in the second before the conversion started
  (what an insert takes on this machine anyway, with its noise).

Then retention: `--month-rows` delivered deliveries (with attempts) in each of two later months; one month is
deleted as the old sweep did (1,000 deliveries a transaction, with their attempts), the other dropped as the new
sweep does (detach and drop the attempts' month and the deliveries'); time and WAL written for each.
Drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from alembic import command
from ulid import ULID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.database import asyncpg_url
from app.core.migrations import alembic_config
from app.core.partitions import PARTITIONED, add_months, month_start, partition_name

BEFORE = "a2bface7e19c"
LEDGER = "d5a1c3e7f920"
EVENTS = "e8b2d4f6a031"
INBOX = "f3c9a1b5d7e2"
ENDPOINT = "whe_" + str(ULID())
CHUNK = 100_000


def _ulid_at(moment: datetime) -> str:
    return str(ULID.from_timestamp(moment.timestamp()))


async def _load_ledger(db: asyncpg.Connection, rows: int) -> None:
    entries = rows // 2
    await db.execute(
        f"""INSERT INTO ledger_entries (id, cause_type, cause_id, memo, created_at)
            SELECT 'ent_' || g, 'bench', 'c' || g, 'bench', now() - interval '90 days' * g / {entries}
            FROM generate_series(1, {entries}) g"""
    )
    for start in range(1, entries + 1, CHUNK):
        end = min(start + CHUNK - 1, entries)
        await db.execute(
            f"""INSERT INTO ledger_postings (entry_id, account, currency, amount)
                SELECT 'ent_' || g, v.account || (g % 1000), 'CNY', v.sign * (100 + g % 5000)
                FROM generate_series({start}, {end}) g,
                     (VALUES ('merchant_', 1), ('pool_', -1)) v(account, sign)"""
        )


async def _load_deliveries(
    db: asyncpg.Connection, rows: int, *, start: datetime, span: timedelta, status: str = "delivered"
) -> None:
    for first in range(0, rows, CHUNK):
        count = min(CHUNK, rows - first)
        events = [_ulid_at(start + span * (first + n) / rows) for n in range(count)]
        await db.copy_records_to_table(
            "events",
            columns=["id", "type", "occurred_at", "data"],
            records=[(f"evt_{e}", "order.paid", start, "{}") for e in events],
        )
        await db.copy_records_to_table(
            "event_deliveries",
            columns=["id", "event_id", "endpoint_id", "status", "attempts", "schedule"],
            records=[(f"dlv_{e}{ENDPOINT[4:]}", f"evt_{e}", ENDPOINT, status, 1, 1) for e in events],
        )
        await db.copy_records_to_table(
            "event_delivery_attempts",
            columns=["id", "delivery_id", "attempted_at", "trigger", "succeeded", "duration_ms"],
            records=[
                (f"att_{ULID()}", f"dlv_{e}{ENDPOINT[4:]}", start, "scheduled", True, 12) for e in events
            ],
        )


Insert = Callable[[asyncpg.Connection, int], Awaitable[None]]


async def _load_inbox(db: asyncpg.Connection, rows: int) -> None:
    await db.execute("INSERT INTO platforms (id, name) VALUES ('plt_bench', 'bench')")
    for start in range(1, rows + 1, CHUNK):
        end = min(start + CHUNK - 1, rows)
        await db.execute(
            f"""INSERT INTO webhook_deliveries (platform_id, webhook_id, received_at, body, status, event_type,
                                                response_status, response_body, settled_at)
                SELECT 'plt_bench', 'msg_' || g, now() - interval '90 days' * ({rows} - g) / {rows},
                       convert_to(repeat('x', 600), 'UTF8'), 'applied', 'order.paid', 200, '{{"status": "applied"}}',
                       now()
                FROM generate_series({start}, {end}) g"""
        )


async def _insert_webhook(db: asyncpg.Connection, n: int) -> None:
    await db.execute(
        """INSERT INTO webhook_deliveries (platform_id, webhook_id, body, status)
           VALUES ('plt_bench', $1, '\\x7b7d', 'applied') ON CONFLICT DO NOTHING""",
        f"msg_new_{n}_{time.monotonic_ns()}",
    )


async def _insert_posting(db: asyncpg.Connection, n: int) -> None:
    await db.execute(
        """INSERT INTO ledger_postings (entry_id, account, currency, amount)
           VALUES ('ent_1', 'bench_a', 'CNY', $1), ('ent_1', 'bench_b', 'CNY', -$1)""",
        n + 1,
    )


async def _insert_delivery(db: asyncpg.Connection, n: int) -> None:
    event = _ulid_at(datetime.now(UTC))
    async with db.transaction():
        await db.execute(
            "INSERT INTO events (id, type, occurred_at, data) VALUES ($1, 'order.paid', now(), '{}')",
            f"evt_{event}",
        )
        await db.execute(
            """INSERT INTO event_deliveries (id, event_id, endpoint_id, status)
               VALUES ($1, $2, $3, 'pending')""",
            f"dlv_{event}{ENDPOINT[4:]}",
            f"evt_{event}",
            ENDPOINT,
        )


async def _longest_insert(dsn: str, insert: Insert, until: asyncio.Event) -> tuple[float, float]:
    """Insert in a loop until `until` is set, one short transaction at a time, while another connection watches
    the inserting backend (every 2 ms) for lock waits. Returns the longest single insert and the longest stretch
    the backend was seen waiting for a lock (s)."""
    db = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    pid = await db.fetchval("SELECT pg_backend_pid()")
    longest = 0.0
    waited = 0.0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal waited
        since = None
        while not stop.is_set():
            kind = await watcher.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
            now = time.perf_counter()
            if kind == "Lock":
                since = since or now
                waited = max(waited, now - since)
            else:
                since = None
            await asyncio.sleep(0.002)

    watching = asyncio.create_task(watch())
    try:
        count = 0
        while not until.is_set():
            began = time.perf_counter()
            await insert(db, count)
            longest = max(longest, time.perf_counter() - began)
            count += 1
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        await watching
        await db.close()
        await watcher.close()
    return longest, waited


async def _convert(url: str, dsn: str, revision: str, insert: Insert) -> tuple[float, float, float, float]:
    """(conversion seconds, longest insert during it, longest lock wait during it, longest insert in the second
    before it)."""
    quiet = asyncio.Event()
    before = asyncio.create_task(_longest_insert(dsn, insert, quiet))
    await asyncio.sleep(1.0)
    quiet.set()
    longest_before, _ = await before
    done = asyncio.Event()
    writer = asyncio.create_task(_longest_insert(dsn, insert, done))
    await asyncio.sleep(0.2)
    began = time.perf_counter()
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)
    took = time.perf_counter() - began
    done.set()
    longest, waited = await writer
    return took, longest, waited, longest_before


async def _wal(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))


async def _retention(db: asyncpg.Connection, rows: int) -> tuple[tuple[float, int], tuple[float, int]]:
    """Two later months of `rows` delivered deliveries: ((delete seconds, WAL bytes), (drop seconds, WAL bytes))."""
    key = PARTITIONED["event_deliveries"]
    later = add_months(month_start(datetime.now(UTC)), 2)
    deleted_month, dropped_month = later, add_months(later, 1)
    for month in (deleted_month, dropped_month):
        await _load_deliveries(db, rows, start=month + timedelta(hours=1), span=timedelta(days=27))
    await db.execute("VACUUM ANALYZE event_deliveries, event_delivery_attempts, events")

    lower, upper = key.bound(deleted_month).strip("'"), key.bound(add_months(deleted_month, 1)).strip("'")
    wal = await _wal(db)
    began = time.perf_counter()
    while (
        True
    ):  # as the sweep before partitioning: 1,000 settled deliveries a transaction, attempts by cascade
        gone = await db.fetchval(
            """WITH batch AS (
                   SELECT id FROM event_deliveries WHERE id >= $1 AND id < $2
                     AND status IN ('delivered', 'failed') ORDER BY id LIMIT 1000
               ), attempts AS (
                   DELETE FROM event_delivery_attempts WHERE delivery_id IN (SELECT id FROM batch)
               ), gone AS (
                   DELETE FROM event_deliveries WHERE id IN (SELECT id FROM batch) RETURNING 1)
               SELECT count(*) FROM gone""",
            lower,
            upper,
        )
        if gone < 1000:
            break
    deleting = (time.perf_counter() - began, await _wal(db) - wal)

    wal = await _wal(db)
    began = time.perf_counter()
    steps: dict[str, float] = {}
    async with db.transaction():  # as app/events/service.py's sweep
        attempts = partition_name("event_delivery_attempts", dropped_month)
        deliveries = partition_name("event_deliveries", dropped_month)
        for step, statement in (
            ("detach attempts", f"ALTER TABLE event_delivery_attempts DETACH PARTITION {attempts}"),
            ("drop attempts", f"DROP TABLE {attempts}"),
            ("detach deliveries", f"ALTER TABLE event_deliveries DETACH PARTITION {deliveries}"),
            (
                "look for a pending one",
                f"SELECT EXISTS (SELECT 1 FROM {deliveries} WHERE status = 'pending')",
            ),
            ("drop deliveries", f"DROP TABLE {deliveries}"),
        ):
            step_began = time.perf_counter()
            await db.execute(statement)
            steps[step] = time.perf_counter() - step_began
    dropping = (time.perf_counter() - began, await _wal(db) - wal)
    print("  the drop's steps (ms): " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in steps.items()))
    return deleting, dropping


async def main(rows: int, month_rows: int) -> None:
    server = asyncpg_url(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    base, _, _ = server.rpartition("/")
    name = f"bench_partitions_{uuid.uuid4().hex[:8]}"
    admin_dsn = server.replace("postgresql+asyncpg://", "postgresql://", 1)
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), BEFORE)
        db = await asyncpg.connect(dsn)
        try:
            began = time.perf_counter()
            await _load_ledger(db, rows)
            await db.execute(
                "INSERT INTO webhook_endpoints (id, url, events) VALUES ($1, 'https://example.org/h', '{order.paid}')",
                ENDPOINT,
            )
            await _load_deliveries(
                db, rows, start=datetime.now(UTC) - timedelta(days=90), span=timedelta(days=89)
            )
            await _load_inbox(db, rows)
            await db.execute("VACUUM ANALYZE")
            print(f"loaded {rows:,} rows in each table in {time.perf_counter() - began:.0f} s")

            for label, revision, insert in (
                ("ledger_postings", LEDGER, _insert_posting),
                ("event_deliveries + attempts", EVENTS, _insert_delivery),
                ("webhook_deliveries", INBOX, _insert_webhook),
            ):
                took, longest, waited, usual = await _convert(url, dsn, revision, insert)
                print(
                    f"{label:<28} conversion {took:6.2f} s; meanwhile the longest lock wait {waited * 1000:6.1f} ms, "
                    f"the longest insert {longest * 1000:6.1f} ms (before: {usual * 1000:.1f} ms)"
                )

            (delete_s, delete_wal), (drop_s, drop_wal) = await _retention(db, month_rows)
            print(f"retention of a month of {month_rows:,} deliveries (+ as many attempts):")
            print(
                f"  DELETE 1,000 a transaction  {delete_s:8.2f} s, WAL {delete_wal / 1e6:8.1f} MB (server-wide)"
            )
            print(
                f"  DETACH + DROP the month     {drop_s:8.3f} s, WAL {drop_wal / 1e6:8.3f} MB (server-wide)"
            )
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--month-rows", type=int, default=300_000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.month_rows))
