"""Every query of the pool queue and of allocation runs: set-based statements on the raw asyncpg connection, so a
run over 100,000 students and a pool of a million orders stays a handful of statements (memory flat in the
number of students)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Allocation, AllocationRun, LovePackage, PackageKindVersion, School

# ---- the pool queue ----


@dataclass(frozen=True, slots=True)
class StatementLineMoney:
    order_id: str
    merchant_id: str
    amount: int


async def positive_statement_lines(db: asyncpg.Connection, statement_id: str) -> list[StatementLineMoney]:
    """A statement's lines that brought money (donations, remainders carried in), in line order."""
    rows = await db.fetch(
        """
        SELECT l.order_id, o.merchant_id, l.amount FROM statement_lines l JOIN orders o ON o.id = l.order_id
        WHERE l.statement_id = $1 AND l.amount > 0 ORDER BY l.id
        """,
        statement_id,
    )
    return [StatementLineMoney(r["order_id"], r["merchant_id"], r["amount"]) for r in rows]


@dataclass(frozen=True, slots=True)
class NewSource:
    kind: str  # collected | released
    statement_id: str
    order_id: str
    merchant_id: str
    amount: int
    released_from_package_id: str | None


async def append_funding_sources(
    db: asyncpg.Connection, sources: Sequence[NewSource], *, currency: str
) -> None:
    """Put money at the end of the queue, in the order given (the caller holds the pool lock)."""
    if not sources:
        return
    await db.execute(
        """
        WITH queue AS (SELECT coalesce(max(end_offset), 0) AS tail FROM funding_sources),
             new AS (SELECT u.*, sum(u.a) OVER (ORDER BY u.i) AS upto
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])
                          WITH ORDINALITY AS u(k, s, o, m, a, p, i))
        INSERT INTO funding_sources (kind, statement_id, order_id, merchant_id, released_from_package_id, currency,
                                     amount, start_offset, end_offset)
        SELECT new.k, new.s, new.o, new.m, new.p, $7, new.a, queue.tail + new.upto - new.a, queue.tail + new.upto
        FROM new, queue ORDER BY new.i
        """,
        [s.kind for s in sources],
        [s.statement_id for s in sources],
        [s.order_id for s in sources],
        [s.merchant_id for s in sources],
        [s.amount for s in sources],
        [s.released_from_package_id for s in sources],
        currency,
    )


async def queue_position(db: asyncpg.Connection) -> tuple[int, int]:
    """(the end of the queue, how much of it packages have taken): what is available is their difference."""
    row = await db.fetchrow(
        """
        SELECT (SELECT coalesce(max(end_offset), 0) FROM funding_sources) AS tail,
               coalesce((SELECT funding_end FROM love_packages ORDER BY funding_start DESC LIMIT 1), 0) AS spent
        """
    )
    assert row is not None
    return int(row["tail"]), int(row["spent"])


async def funding_of_packages(db: asyncpg.Connection, package_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Each order's money in these packages, with the statement it came from, in queue order."""
    return list(
        await db.fetch(
            """SELECT package_id, statement_id, order_id, merchant_id, amount FROM package_funding
               WHERE package_id = ANY($1::text[]) ORDER BY end_offset, package_id""",
            list(package_ids),
        )
    )


async def merchant_shares(db: asyncpg.Connection, package_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Per package and merchant: its money in the package, the merchant's platform, and where the package went."""
    return list(
        await db.fetch(
            """
            SELECT f.package_id, f.merchant_id, m.platform_id, sum(f.amount) AS share, k.cost, k.currency,
                   sc.country, sc.region, k.grade
            FROM package_funding f
            JOIN love_packages k ON k.id = f.package_id JOIN merchants m ON m.id = f.merchant_id
            LEFT JOIN schools sc ON sc.id = k.school_id
            WHERE f.package_id = ANY($1::text[])
            GROUP BY f.package_id, f.merchant_id, m.platform_id, k.cost, k.currency, sc.country, sc.region, k.grade
            ORDER BY f.package_id, f.merchant_id
            """,
            list(package_ids),
        )
    )


# ---- allocation runs ----


async def lock_stock(db: asyncpg.Connection, kind_id: str) -> list[str]:
    """Packages of this kind back in stock, oldest first, locked for the run."""
    rows = await db.fetch(
        """
        SELECT id FROM love_packages WHERE kind_id = $1 AND status = 'in_stock'
        ORDER BY status_changed_at, id FOR UPDATE
        """,
        kind_id,
    )
    return [r["id"] for r in rows]


# The fairness order (rule version `fair-1`): students whose package was lost or damaged this term first; then
# students who never received one; then the longest since their last one. Ties go round-robin across schools in
# registration order (each school's first student, then each school's second, ...), and within a school by
# registration order. "Live" statuses are `app.models.allocation.LIVE_STATUSES`.
_ELIGIBLE = """
    WITH lost AS (
        SELECT DISTINCT student_id FROM allocations WHERE term = $1 AND status IN ('damaged', 'missing')),
    received AS (
        SELECT student_id, max(delivered_at) AS last_at FROM allocations
        WHERE status IN ('delivered', 'accepted') GROUP BY student_id),
    eligible AS (
        SELECT s.id AS student_id, s.school_id, s.grade, s.registration_number AS student_reg,
               sc.registration_number AS school_reg,
               CASE WHEN lost.student_id IS NOT NULL THEN 0 WHEN r.last_at IS NULL THEN 1 ELSE 2 END AS class,
               CASE WHEN lost.student_id IS NULL THEN r.last_at END AS last_at
        FROM students s
        JOIN schools sc ON sc.id = s.school_id
        LEFT JOIN lost ON lost.student_id = s.id
        LEFT JOIN received r ON r.student_id = s.id
        WHERE s.active AND sc.country = ANY($2::text[]) AND s.grade = ANY($3::text[])
          AND NOT EXISTS (SELECT 1 FROM allocations a
                          WHERE a.student_id = s.id AND a.term = $1
                            AND a.status IN ('allocated', 'shipped', 'delivered', 'accepted')))
"""


async def count_eligible(db: asyncpg.Connection, term: str, countries: list[str], grades: list[str]) -> int:
    query = _ELIGIBLE + "SELECT count(*) FROM eligible"  # noqa: S608 - constant text, values are parameters
    return int(await db.fetchval(query, term, countries, grades))


async def plan_students(
    db: asyncpg.Connection, term: str, countries: list[str], grades: list[str], limit: int
) -> None:
    """The first `limit` eligible students in fairness order, into the transaction's `run_plan` table."""
    await db.execute("DROP TABLE IF EXISTS run_plan")
    await db.execute(
        "CREATE TEMP TABLE run_plan (rank int PRIMARY KEY, student_id text, school_id text, grade text,"
        " reason text, last_at timestamptz, turn int, allocation_id text, package_id text, from_stock bool,"
        " shipment_id text) ON COMMIT DROP"
    )
    await db.execute(
        _ELIGIBLE  # noqa: S608 - constant text, values are parameters
        + """,
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY school_id, class, last_at ORDER BY student_reg) AS turn
            FROM eligible)
        INSERT INTO run_plan (rank, student_id, school_id, grade, reason, last_at, turn)
        SELECT row_number() OVER (ORDER BY class, last_at NULLS FIRST, turn, school_reg), student_id, school_id,
               grade, (ARRAY['replacement', 'never_received', 'longest_since_last'])[class + 1], last_at, turn
        FROM ranked ORDER BY class, last_at NULLS FIRST, turn, school_reg LIMIT $4
        """,
        term,
        countries,
        grades,
        limit,
    )


async def plan_digest(db: asyncpg.Connection) -> str:
    """SHA-256 (hex) of the plan in `run_plan`: each student in rank order with what ranked it there, and its
    school's logistics partner (who would ship it). Computed by the database, so memory stays flat."""
    digest = await db.fetchval(
        """
        SELECT encode(sha256(convert_to(coalesce(string_agg(
                   concat_ws('|', p.rank, p.student_id, p.school_id, p.grade, p.reason,
                             extract(epoch FROM p.last_at), p.turn, sc.logistics_partner_id),
                   E'\n' ORDER BY p.rank), ''), 'UTF8')), 'hex')
        FROM run_plan p JOIN schools sc ON sc.id = p.school_id
        """
    )
    return str(digest)


async def plan_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """The plan in rank order, for a dry run's answer."""
    return list(
        await db.fetch(
            "SELECT rank, student_id, school_id, grade, reason, last_at, turn FROM run_plan ORDER BY rank"
        )
    )


async def planned_schools(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """Each school in the plan with its logistics partner and how many students it has in the plan."""
    return list(
        await db.fetch(
            """
            SELECT p.school_id, sc.logistics_partner_id, sc.registration_number, count(*) AS students
            FROM run_plan p JOIN schools sc ON sc.id = p.school_id
            GROUP BY p.school_id, sc.logistics_partner_id, sc.registration_number
            ORDER BY sc.registration_number
            """
        )
    )


async def assign_packages(
    db: asyncpg.Connection,
    allocation_ids: Sequence[str],
    stock_ids: Sequence[str],
    new_ids: Sequence[str],
    shipments: dict[str, str],
) -> None:
    """The first students get the stock packages (oldest first), the rest new ones; each its school's shipment."""
    await db.execute(
        """
        UPDATE run_plan p SET allocation_id = u.allocation_id, package_id = u.package_id, from_stock = u.rank <= $3
        FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(allocation_id, package_id, rank)
        WHERE p.rank = u.rank
        """,
        list(allocation_ids),
        [*stock_ids, *new_ids],
        len(stock_ids),
    )
    await db.execute(
        """
        UPDATE run_plan p SET shipment_id = u.shipment_id
        FROM unnest($1::text[], $2::text[]) AS u(school_id, shipment_id) WHERE p.school_id = u.school_id
        """,
        list(shipments),
        list(shipments.values()),
    )


async def insert_run(
    db: asyncpg.Connection,
    run_id: str,
    term: str,
    kind_id: str,
    version_id: str,
    max_packages: int | None,
    now: datetime,
) -> None:
    await db.execute(
        """INSERT INTO allocation_runs (id, term, kind_id, kind_version_id, max_packages, summary, created_at)
           VALUES ($1, $2, $3, $4, $5, '{}'::jsonb, $6)""",
        run_id,
        term,
        kind_id,
        version_id,
        max_packages,
        now,
    )


async def store_run_summary(db: asyncpg.Connection, run_id: str, summary_json: str) -> None:
    await db.execute("UPDATE allocation_runs SET summary = $2::jsonb WHERE id = $1", run_id, summary_json)


async def insert_shipments(
    db: asyncpg.Connection, run_id: str, schools: Sequence[tuple[str, str, str]], now: datetime
) -> None:
    """(shipment id, school id, partner id): planned, one per school."""
    await db.execute(
        """
        INSERT INTO shipments (id, run_id, school_id, logistics_partner_id, status, status_changed_at, last_event_at)
        SELECT u.id, $1, u.school_id, u.partner_id, 'planned', $5, $5
        FROM unnest($2::text[], $3::text[], $4::text[]) AS u(id, school_id, partner_id)
        """,
        run_id,
        [s[0] for s in schools],
        [s[1] for s in schools],
        [s[2] for s in schools],
        now,
    )


async def create_packages(
    db: asyncpg.Connection,
    *,
    run_id: str,
    term: str,
    kind_id: str,
    version_id: str,
    cost: int,
    currency: str,
    rule_version: str,
    spent: int,
    stock: int,
    now: datetime,
) -> None:
    """New packages for the plan's students without stock, stock packages sent out again, and every student's
    allocation record. The k-th new package is funded by the queue's next stretch, `[spent + k·cost,
    spent + (k+1)·cost)`: oldest money first."""
    await db.execute(
        """
        INSERT INTO love_packages (id, kind_id, kind_version_id, cost, currency, run_id, status, school_id, grade,
                                   shipment_id, status_changed_at, funding_start, funding_end)
        SELECT package_id, $1, $2, $3::bigint, $4, $5, 'allocated', school_id, grade, shipment_id, $6,
               $7::bigint + (rank - $8::int - 1) * $3::bigint, $7::bigint + (rank - $8::int) * $3::bigint
        FROM run_plan WHERE NOT from_stock ORDER BY rank
        """,
        kind_id,
        version_id,
        cost,
        currency,
        run_id,
        now,
        spent,
        stock,
    )
    await db.execute(
        """
        UPDATE love_packages k SET status = 'allocated', school_id = p.school_id, grade = p.grade,
                                   shipment_id = p.shipment_id, status_changed_at = $1
        FROM run_plan p WHERE p.from_stock AND k.id = p.package_id
        """,
        now,
    )
    await db.execute(
        """
        INSERT INTO allocations (id, student_id, school_id, package_id, run_id, shipment_id, term, grade, rank,
                                 reason, rule_version, from_stock, cost, status)
        SELECT p.allocation_id, p.student_id, p.school_id, p.package_id, $1,
               p.shipment_id, $2, p.grade, p.rank, p.reason, $3, p.from_stock, k.cost, 'allocated'
        FROM run_plan p JOIN love_packages k ON k.id = p.package_id ORDER BY p.rank
        """,
        run_id,
        term,
        rule_version,
    )


async def served_per_school(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            """
            SELECT p.school_id, p.shipment_id, count(*) AS packages, count(*) FILTER (WHERE p.from_stock) AS from_stock
            FROM run_plan p JOIN schools sc ON sc.id = p.school_id
            GROUP BY p.school_id, p.shipment_id, sc.registration_number ORDER BY sc.registration_number
            """
        )
    )


async def plan_size(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM run_plan"))


# ---- reads ----


async def run_summaries(
    session: AsyncSession, *, after: str | None, limit: int
) -> list[tuple[str, dict[str, Any]]]:
    query = select(AllocationRun.id, AllocationRun.summary).order_by(AllocationRun.id).limit(limit)
    if after is not None:
        query = query.where(AllocationRun.id > after)
    return [(r[0], r[1]) for r in await session.execute(query)]


async def latest_run_summaries(session: AsyncSession, *, limit: int) -> list[dict[str, Any]]:
    """The newest runs first."""
    query = select(AllocationRun.summary).order_by(AllocationRun.id.desc()).limit(limit)
    return list(await session.scalars(query))


async def run_summary(session: AsyncSession, run_id: str) -> dict[str, Any] | None:
    return await session.scalar(select(AllocationRun.summary).where(AllocationRun.id == run_id))


async def package_with_place(session: AsyncSession, package_id: str) -> tuple[Any, ...] | None:
    """The package, its kind version's name, and its school's country and region."""
    row = (
        await session.execute(
            select(LovePackage, PackageKindVersion.name, School.country, School.region)
            .join(PackageKindVersion, PackageKindVersion.id == LovePackage.kind_version_id)
            .outerjoin(School, School.id == LovePackage.school_id)
            .where(LovePackage.id == package_id)
        )
    ).first()
    return tuple(row) if row else None


async def package_funding_lines(
    db: asyncpg.Connection, package_id: str, *, merchant_id: str | None = None
) -> list[tuple[str, str, int]]:
    """(merchant id, the platform's order id, amount) per order that paid for the package, in queue order."""
    rows = await db.fetch(
        """
        SELECT f.merchant_id, o.external_id, sum(f.amount) AS amount
        FROM package_funding f JOIN orders o ON o.id = f.order_id
        WHERE f.package_id = $1 AND ($2::text IS NULL OR f.merchant_id = $2)
        GROUP BY f.merchant_id, o.external_id ORDER BY min(f.end_offset)
        """,
        package_id,
        merchant_id,
    )
    return [(r["merchant_id"], r["external_id"], int(r["amount"])) for r in rows]


async def packages_page(
    session: AsyncSession,
    *,
    after: str | None,
    limit: int,
    run_id: str | None,
    school_id: str | None,
    status: str | None,
) -> list[LovePackage]:
    query = select(LovePackage).order_by(LovePackage.id).limit(limit)
    if after is not None:
        query = query.where(LovePackage.id > after)
    if run_id is not None:
        query = query.where(LovePackage.run_id == run_id)
    if school_id is not None:
        query = query.where(LovePackage.school_id == school_id)
    if status is not None:
        query = query.where(LovePackage.status == status)
    return list(await session.scalars(query))


async def student_allocations(
    session: AsyncSession, student_id: str, *, after: str | None, limit: int
) -> list[tuple[Allocation, str, str, str]]:
    """A student's allocations, oldest first, with the package's kind, kind version and currency."""
    query = (
        select(Allocation, LovePackage.kind_id, LovePackage.kind_version_id, LovePackage.currency)
        .join(LovePackage, LovePackage.id == Allocation.package_id)
        .where(Allocation.student_id == student_id)
        .order_by(Allocation.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Allocation.id > after)
    return [(r[0], r[1], r[2], r[3]) for r in await session.execute(query)]


async def funding_by_merchant(
    db: asyncpg.Connection, package_ids: Sequence[str]
) -> dict[str, list[tuple[str, int]]]:
    found: dict[str, list[tuple[str, int]]] = {}
    for row in await merchant_shares(db, package_ids):
        found.setdefault(row["package_id"], []).append((row["merchant_id"], int(row["share"])))
    return found


async def order_trail(db: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    """The packages an order's money helped fund, with its share, where they went and how far they got. Packages
    of a cancelled shipment are left out: their money went back to the pool and funds other packages, which are
    in the trail in their place."""
    return list(
        await db.fetch(
            """
            SELECT k.id AS package_id, sum(f.amount) AS share, k.currency, sc.country, sc.region, k.grade, k.status,
                   k.delivered_at, k.receipt_confirmed_at
            FROM package_funding f JOIN love_packages k ON k.id = f.package_id
            LEFT JOIN schools sc ON sc.id = k.school_id
            WHERE f.order_id = $1 AND k.status <> 'cancelled'
            GROUP BY k.id, k.currency, sc.country, sc.region, k.grade, k.status, k.delivered_at,
                     k.receipt_confirmed_at
            ORDER BY k.id
            """,
            order_id,
        )
    )
