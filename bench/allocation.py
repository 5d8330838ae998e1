"""Allocation benchmark: one run over 100,000 students in 500 schools, funded from a pool of 1,000,000 orders.

    .venv/bin/python bench/allocation.py [--students 100000] [--schools 500] [--orders 1000000] [--packages 50000]

Makes a fresh database on `DATABASE_URL`'s server (default postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, bulk-loads the programme with set-based SQL (orders, one statement per 1,000 orders, the pool's
funding sources with the ledger entry that put the money in the pool, schools across NP/KH/MM, students), then
runs one allocation through the service code (`app.packages.allocation.run_allocation`, in one transaction as
the API does) and prints: wall time, packages per second, the lineage (package × order rows of the
`package_funding` view: the run writes each package's stretch of the pool queue, and the orders paying for it are
the funding sources that stretch overlaps), the run's peak memory (Python's, traced with tracemalloc in a dry run of
the same plan just before the timed run, which runs untraced), and runs with the same number of packages over
a tenth of the students and over all of them (memory must not grow with the number of students). Verifies that every
package is funded exactly, no money is spent twice and no student got two packages. Drops the database at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.database import asyncpg_url, make_sessionmaker
from app.core.migrations import upgrade_to_head
from app.packages.allocation import run_allocation
from app.packages.schemas import AllocationRunIn

COST = 2500  # USD 25.00 a package
NOW = datetime(2026, 12, 1, tzinfo=UTC)


async def load(dsn: str, *, students: int, schools: int, orders: int, packages: int) -> str:
    """Everything a run reads, made the fastest way: one INSERT … SELECT per table. Returns the kind id."""
    per_order = packages * COST // orders + (1 if packages * COST % orders else 0)
    db = await asyncpg.connect(dsn)
    try:
        await db.execute(
            """
            INSERT INTO platforms (id, name) VALUES ('plt_bench', 'Bench');
            INSERT INTO logistics_partners (id, name) VALUES ('lgp_bench', 'Bench Express');
            INSERT INTO merchants (id, platform_id, external_id, name, country, billing_method)
            SELECT 'mer_' || n, 'plt_bench', 'm' || n, 'Merchant ' || n, 'CN', 'bank_transfer'
            FROM generate_series(1, 100) AS n;
            INSERT INTO settlement_runs (id, as_of, summary) VALUES ('stl_bench', now(), '{}');
            """
        )
        started = time.perf_counter()
        await db.execute(
            """
            INSERT INTO statements (id, run_id, merchant_id, currency, as_of, total, billing_method, status,
                                    payment_attempts, paid_at, paid_via)
            SELECT 'stm_' || lpad(n::text, 7, '0'), 'stl_bench', 'mer_' || (n % 100 + 1), 'USD', now(),
                   1000 * $1::bigint, 'bank_transfer', 'paid', 0, now(), 'bank_transfer'
            FROM generate_series(1, $2::int) AS n
            """,
            per_order,
            orders // 1000,
        )
        await db.execute(
            """
            INSERT INTO orders (id, platform_id, external_id, merchant_id, currency, placed_at, items, base_amount,
                                donation_amount, refunded_amount, reversed_amount, content_hash, statement_id,
                                settled_reversed)
            SELECT 'ord_' || lpad(n::text, 8, '0'), 'plt_bench', 'O-' || n, 'mer_' || ((n / 1000) % 100 + 1),
                   'USD', now(), '[]'::jsonb, $1::bigint, $1::bigint, 0, 0, '\\x00'::bytea,
                   'stm_' || lpad((n / 1000 + 1)::text, 7, '0'), 0
            FROM generate_series(0, $2::int - 1) AS n
            """,
            per_order,
            orders,
        )
        await db.execute(
            """
            INSERT INTO funding_sources (kind, statement_id, order_id, merchant_id, currency, amount, start_offset,
                                         end_offset)
            SELECT 'collected', 'stm_' || lpad((n / 1000 + 1)::text, 7, '0'), 'ord_' || lpad(n::text, 8, '0'),
                   'mer_' || ((n / 1000) % 100 + 1), 'USD', $1::bigint, n * $1::bigint, (n + 1) * $1::bigint
            FROM generate_series(0, $2::int - 1) AS n
            """,
            per_order,
            orders,
        )
        # The pool's money in the ledger, as the conversions would have posted it.
        await db.execute(
            "INSERT INTO ledger_entries (id, cause_type, cause_id, memo)"
            " VALUES ('ent_bench', 'fx_conversion', 'bench', 'bench')"
        )
        await db.execute(
            """
            INSERT INTO ledger_postings (entry_id, account, currency, amount) VALUES
                ('ent_bench', 'programme:pool', 'USD', $1::bigint),
                ('ent_bench', 'programme:collected_unconverted', 'USD', -$1::bigint)
            """,
            per_order * orders,
        )
        await db.execute(
            """
            INSERT INTO schools (id, name, country, region, logistics_partner_id, teacher_contact_encrypted)
            SELECT 'sch_' || lpad(n::text, 4, '0'), 'School ' || n, (ARRAY['NP', 'KH', 'MM'])[n % 3 + 1],
                   'Region ' || (n % 7), 'lgp_bench', 'encrypted'
            FROM generate_series(1, $1::int) AS n ORDER BY n
            """,
            schools,
        )
        await db.execute(
            """
            INSERT INTO students (id, school_id, grade, roster_code_hash, roster_code_encrypted)
            SELECT 'stu_' || lpad(n::text, 7, '0'), 'sch_' || lpad((n % $2::int + 1)::text, 4, '0'),
                   ((n % 6) + 1)::text, sha256(n::text::bytea), 'encrypted'
            FROM generate_series(1, $1::int) AS n ORDER BY n
            """,
            students,
            schools,
        )
        await db.execute("INSERT INTO package_kinds (id) VALUES ('pkk_bench')")
        await db.execute(
            """
            INSERT INTO package_kind_versions (id, kind_id, version, name, contents, unit_cost, currency, countries,
                                               grades)
            VALUES ('pkv_bench', 'pkk_bench', 1, 'Primary box', '[{"item": "Notebook", "quantity": 4}]', $1, 'USD',
                    ARRAY['KH', 'MM', 'NP'], ARRAY['1', '2', '3', '4', '5', '6'])
            """,
            COST,
        )
        await db.execute("ANALYZE")
        print(
            f"  loaded in {time.perf_counter() - started:.1f} s: {orders:,} orders of {per_order} cents, "
            f"{students:,} students in {schools} schools"
        )
    finally:
        await db.close()
    return "pkk_bench"


async def one_run(url: str, kind_id: str, *, packages: int, dry_run: bool = False) -> dict[str, Any]:
    """One run through the service code, in one transaction as the API does. A dry run (the same plan, rolled
    back) is traced with tracemalloc for the Python peak; a real run is timed untraced (tracing slows every
    allocation, so a traced run's time would be the tracer's as much as ours)."""
    engine = create_async_engine(url, pool_size=2)
    sessionmaker = make_sessionmaker(engine)
    gc.collect()
    if dry_run:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        async with sessionmaker() as session, session.begin():
            out = await run_allocation(
                session,
                AllocationRunIn(
                    term="2027-T1", package_kind_id=kind_id, max_packages=packages, dry_run=dry_run
                ),
                base_currency="USD",
                now=NOW,
            )
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if dry_run else 0
    finally:
        tracemalloc.stop()
        await engine.dispose()
    return {
        "seconds": elapsed,
        "packages": out.packages,
        "python_peak_mib": peak / 2**20,
        "run": out,
    }


async def verify(dsn: str, packages: int) -> list[str]:
    db = await asyncpg.connect(dsn)
    try:
        problems = []
        bad_funding = await db.fetchval(
            """SELECT count(*) FROM love_packages k
               LEFT JOIN (SELECT package_id, sum(amount) AS a FROM package_funding GROUP BY 1) f ON f.package_id = k.id
               WHERE coalesce(f.a, 0) <> k.cost"""
        )
        if bad_funding:
            problems.append(f"{bad_funding} packages not funded exactly")
        overspent = await db.fetchval(
            """SELECT count(*) FROM funding_sources s JOIN (SELECT source_id, sum(amount) AS a FROM package_funding
               GROUP BY 1) u ON u.source_id = s.id WHERE u.a > s.amount"""
        )
        if overspent:
            problems.append(f"{overspent} sources spent beyond their amount")
        twice = await db.fetchval("SELECT count(*) - count(DISTINCT student_id) FROM allocations")
        if twice:
            problems.append(f"{twice} students got two packages")
        made = await db.fetchval("SELECT count(*) FROM love_packages")
        if made != packages:
            problems.append(f"{made} packages made, {packages} expected")
        return problems
    finally:
        await db.close()


async def bench(args: argparse.Namespace) -> int:
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin_dsn = asyncpg_url(server).replace("postgresql+asyncpg://", "postgresql://", 1)
    base = admin_dsn.rsplit("/", 1)[0]
    os.environ.setdefault("G4G_DATA_KEY", Fernet.generate_key().decode())
    results = []
    # Memory against students: the same packages for a tenth of the students and for all of them; then the run.
    small = args.packages // 5
    cases = [
        (args.students // 10, small, args.orders // 5),
        (args.students, small, args.orders // 5),
        (args.students, args.packages, args.orders),
    ]
    for students, packages, orders in cases:
        name = f"g4g_bench_alloc_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        dsn = f"{base}/{name}"
        try:
            print(f"{students:,} students, {packages:,} packages:")
            await asyncio.to_thread(upgrade_to_head, asyncpg_url(dsn))
            kind_id = await load(
                dsn, students=students, schools=args.schools, orders=orders, packages=packages
            )
            wanted = min(packages, students)
            traced = await one_run(asyncpg_url(dsn), kind_id, packages=wanted, dry_run=True)
            result = await one_run(asyncpg_url(dsn), kind_id, packages=wanted)
            result["python_peak_mib"] = traced["python_peak_mib"]
            lineage = await (await asyncpg.connect(dsn)).fetchval(
                "SELECT count(*) FROM package_funding"
            )  # derived
            problems = await verify(dsn, wanted)
            result.update(students=students, lineage=lineage, problems=problems)
            results.append(result)
            print(
                f"  run: {result['seconds']:.2f} s, {result['packages']:,} packages "
                f"({result['packages'] / result['seconds']:,.0f}/s), {lineage:,} lineage rows, "
                f"Python peak {result['python_peak_mib']:.1f} MiB (traced in its dry run), "
                f"verification: {'ok' if not problems else '; '.join(problems)}"
            )
        finally:
            admin = await asyncpg.connect(admin_dsn)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    few, many, full = results
    print(
        f"\nThe run: {full['students']:,} students, {full['packages']:,} packages from {args.orders:,} orders in "
        f"{full['seconds']:.2f} s ({full['packages'] / full['seconds']:,.0f} packages/s; target <= 10 s: "
        f"{'met' if full['seconds'] <= 10 else 'MISSED'}), {full['lineage']:,} lineage rows."
        f"\nMemory against students ({few['packages']:,} packages each): Python peak {few['python_peak_mib']:.1f} MiB "
        f"with {few['students']:,} students, {many['python_peak_mib']:.1f} MiB with {many['students']:,} "
        f"(ratio {many['python_peak_mib'] / few['python_peak_mib']:.2f})."
    )
    return 0 if not any(r["problems"] for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=100_000)
    parser.add_argument("--schools", type=int, default=500)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--packages", type=int, default=50_000)
    return asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
