"""Every reports query. The figures are aggregates over whole tables, so they are computed in the background
(`service.TransparencyReport`) and read back from `report_summaries`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import accounts
from app.models import ReportSummary


@dataclass(frozen=True, slots=True)
class StageCell:
    """Orders placed in one month, in one currency, whose donations are at one stage."""

    month: str
    currency: str
    stage: str  # pledged | final | billed | collected | in_pool | reversed
    orders: int
    net: int
    reversed: int


# The stage of an order's donation. It is `donations.service.stage_of` in SQL (so a whole table is summed in one
# pass), plus `in_pool`: collected and already converted into the pool. tests/reports checks the two agree.
_STAGE = """
    CASE WHEN s.status = 'paid' AND c.statement_id IS NOT NULL THEN 'in_pool'
         WHEN s.status = 'paid' THEN 'collected'
         WHEN s.status IS NOT NULL THEN 'billed'
         WHEN o.donation_amount > 0 AND o.reversed_amount = o.donation_amount THEN 'reversed'
         WHEN o.placed_at <= :final_before THEN 'final'
         ELSE 'pledged' END
"""


async def stage_cells(
    session: AsyncSession,
    *,
    final_before: datetime,
    merchant_id: str | None = None,
    placed_from: datetime | None = None,
    placed_to: datetime | None = None,
) -> list[StageCell]:
    """Orders, net donations and reversals by month placed, currency and stage (all merchants, or one; all time,
    or orders placed in `[placed_from, placed_to)`). Orders that gave nothing (placed before the merchant's first
    rule, or while none was in force: `orders.donation_reason`) are not counted: they are at no stage."""
    conditions = ["o.donation_amount > 0"]
    if merchant_id is not None:
        conditions.append("o.merchant_id = :merchant_id")
    if placed_from is not None:
        conditions.append("o.placed_at >= :placed_from")
    if placed_to is not None:
        conditions.append("o.placed_at < :placed_to")
    where = "WHERE " + " AND ".join(conditions)
    rows = await session.execute(
        text(
            f"""
            SELECT to_char(o.placed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, o.currency, {_STAGE} AS stage,
                   count(*) AS orders, sum(o.donation_amount - o.reversed_amount) AS net,
                   sum(o.reversed_amount) AS reversed
            FROM orders o
            LEFT JOIN statements s ON s.id = o.statement_id
            LEFT JOIN fx_conversions c ON c.statement_id = o.statement_id
            {where}
            GROUP BY 1, 2, 3
            ORDER BY 1, 2, 3
            """  # noqa: S608 - fixed fragments only; every value is a bound parameter
        ),
        {
            "final_before": final_before,
            "merchant_id": merchant_id,
            "placed_from": placed_from,
            "placed_to": placed_to,
        },
    )
    return [StageCell(r.month, r.currency, r.stage, int(r.orders), int(r.net), int(r.reversed)) for r in rows]


async def merchants_with_orders(session: AsyncSession) -> int:
    count = await session.scalar(
        text(
            """SELECT count(*) FROM merchants m
               WHERE EXISTS (SELECT 1 FROM orders o WHERE o.merchant_id = m.id AND o.donation_amount > 0)"""
        )
    )
    return int(count or 0)


async def pool_received(session: AsyncSession, base_currency: str) -> int:
    """Everything ever converted into the pool, in the base currency."""
    total = await session.scalar(
        text("SELECT coalesce(sum(base_amount), 0) FROM fx_conversions WHERE base_currency = :base"),
        {"base": base_currency},
    )
    return int(total or 0)


async def pool_by_currency(session: AsyncSession, base_currency: str) -> dict[str, int]:
    """What the conversions of each currency brought into the pool, in the base currency (they add up to
    `pool_received`)."""
    rows = await session.execute(
        text(
            """SELECT currency, sum(base_amount) AS base_amount FROM fx_conversions
               WHERE base_currency = :base GROUP BY currency ORDER BY currency"""
        ),
        {"base": base_currency},
    )
    return {r.currency: int(r.base_amount) for r in rows}


async def pool_balance(session: AsyncSession, base_currency: str) -> int:
    total = await session.scalar(
        text(
            "SELECT coalesce(sum(amount), 0) FROM ledger_postings WHERE account = :pool AND currency = :base"
        ),
        {"pool": accounts.POOL, "base": base_currency},
    )
    return int(total or 0)


async def latest_rates(session: AsyncSession, base_currency: str) -> dict[str, Decimal]:
    rows = await session.execute(
        text(
            """
            SELECT DISTINCT ON (currency) currency, rate FROM fx_rates WHERE base_currency = :base
            ORDER BY currency, created_at DESC, id DESC
            """
        ),
        {"base": base_currency},
    )
    return {r.currency: Decimal(r.rate) for r in rows}


async def summary(session: AsyncSession, name: str) -> ReportSummary | None:
    return await session.scalar(select(ReportSummary).where(ReportSummary.name == name))


async def summary_version(session: AsyncSession, name: str) -> tuple[str, datetime, datetime] | None:
    """The stored figures' ETag and times, without their body."""
    row = (
        await session.execute(
            select(ReportSummary.etag, ReportSummary.updated_at, ReportSummary.checked_at).where(
                ReportSummary.name == name
            )
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def try_lock_refresh(session: AsyncSession, name: str, *, wait: bool) -> bool:
    """One refresher per report at a time, across processes (released when the transaction ends)."""
    key = func.hashtextextended("report:" + name, 0)
    if wait:
        await session.execute(select(func.pg_advisory_xact_lock(key)))
        return True
    return bool(await session.scalar(select(func.pg_try_advisory_xact_lock(key))))


async def save_summary(
    session: AsyncSession, *, name: str, body: str, etag: str, updated_at: datetime, checked_at: datetime
) -> None:
    statement = insert(ReportSummary).values(
        name=name, body=body, etag=etag, updated_at=updated_at, checked_at=checked_at
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[ReportSummary.name],
            set_={
                "body": statement.excluded.body,
                "etag": statement.excluded.etag,
                "updated_at": statement.excluded.updated_at,
                "checked_at": statement.excluded.checked_at,
            },
        )
    )


async def mark_checked(session: AsyncSession, name: str, checked_at: datetime) -> None:
    row = await summary(session, name)
    if row is not None:
        row.checked_at = checked_at
        await session.flush()


# ---- Love Packages ----


@dataclass(frozen=True, slots=True)
class PlaceCell:
    """Packages (not cancelled) and students at the schools of one region."""

    country: str
    region: str
    allocated: int
    delivered: int  # accepted by the school
    students_reached: int  # students whose package reached them (delivered or accepted)
    cost: int  # base minor units: what the allocated packages cost


async def place_cells(session: AsyncSession) -> list[PlaceCell]:
    """Every region with a school, whether or not a package went there yet (a row is listed for the school, so
    its being listed says nothing about how many children were reached)."""
    rows = await session.execute(
        text(
            """
            WITH places AS (SELECT DISTINCT country, region FROM schools),
            packages AS (
                SELECT sc.country, sc.region, count(*) AS allocated,
                       count(*) FILTER (WHERE k.status = 'accepted') AS delivered, sum(k.cost) AS cost
                FROM love_packages k JOIN schools sc ON sc.id = k.school_id
                WHERE k.status <> 'cancelled' GROUP BY 1, 2),
            reached AS (
                SELECT sc.country, sc.region, count(DISTINCT a.student_id) AS students
                FROM allocations a JOIN schools sc ON sc.id = a.school_id
                WHERE a.status IN ('delivered', 'accepted') GROUP BY 1, 2)
            SELECT pl.country, pl.region,
                   coalesce(p.allocated, 0) AS allocated, coalesce(p.delivered, 0) AS delivered,
                   coalesce(r.students, 0) AS students, coalesce(p.cost, 0) AS cost
            FROM places pl
            LEFT JOIN packages p ON p.country = pl.country AND p.region = pl.region
            LEFT JOIN reached r ON r.country = pl.country AND r.region = pl.region
            ORDER BY 1, 2
            """
        )
    )
    return [
        PlaceCell(r.country, r.region, int(r.allocated), int(r.delivered), int(r.students), int(r.cost))
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class PackageCosts:
    """What the packages (not cancelled) cost one by one, in base minor units: the cheapest and the dearest."""

    lowest: int
    highest: int


async def package_costs(session: AsyncSession) -> PackageCosts | None:
    """None before the first package."""
    row = (
        await session.execute(
            text(
                "SELECT min(cost) AS lowest, max(cost) AS highest FROM love_packages WHERE status <> 'cancelled'"
            )
        )
    ).one()
    return PackageCosts(int(row.lowest), int(row.highest)) if row.highest is not None else None


# How far each allocation got: a box counts at every step it reached.
FUNNEL = ("allocated", "shipped", "delivered", "accepted")


async def delivery_funnel(session: AsyncSession) -> list[int]:
    row = (
        await session.execute(
            text(
                """
                SELECT count(*) FILTER (WHERE status <> 'cancelled') AS allocated,
                       count(*) FILTER (WHERE status IN ('shipped', 'delivered', 'accepted', 'damaged', 'missing',
                                                         'returned')) AS shipped,
                       count(*) FILTER (WHERE status IN ('delivered', 'accepted', 'damaged')) AS delivered,
                       count(*) FILTER (WHERE status = 'accepted') AS accepted
                FROM allocations
                """
            )
        )
    ).one()
    return [int(row.allocated), int(row.shipped), int(row.delivered), int(row.accepted)]


async def package_money(session: AsyncSession, base_currency: str) -> dict[str, int]:
    """The package accounts' balances (base currency), by account."""
    rows = await session.execute(
        text(
            """SELECT account, sum(amount) AS balance FROM ledger_postings
               WHERE account LIKE 'programme:packages:%' AND currency = :base GROUP BY account"""
        ),
        {"base": base_currency},
    )
    return {r.account: int(r.balance) for r in rows}


# ---- one merchant's impact ----


async def merchant_packages(
    session: AsyncSession, merchant_id: str, *, placed_from: datetime | None, placed_to: datetime | None
) -> list[tuple[str, int, int, str, str, str]]:
    """Per package the merchant's orders (placed in the period) helped fund: (package, its share, the package's
    cost, status, country, region)."""
    rows = await session.execute(
        text(
            """
            SELECT k.id AS package_id,
                   sum(LEAST(s.end_offset, k.funding_end) - GREATEST(s.start_offset, k.funding_start)) AS share,
                   k.cost, k.status, sc.country, sc.region
            FROM funding_sources s
            JOIN orders o ON o.id = s.order_id
            JOIN love_packages k
              ON int8range(k.funding_start, k.funding_end) && int8range(s.start_offset, s.end_offset)
            LEFT JOIN schools sc ON sc.id = k.school_id
            WHERE s.merchant_id = :merchant AND k.status <> 'cancelled'
              AND (CAST(:placed_from AS timestamptz) IS NULL OR o.placed_at >= :placed_from)
              AND (CAST(:placed_to AS timestamptz) IS NULL OR o.placed_at < :placed_to)
            GROUP BY k.id, k.cost, k.status, sc.country, sc.region
            ORDER BY k.id
            """
        ),
        {"merchant": merchant_id, "placed_from": placed_from, "placed_to": placed_to},
    )
    return [(r.package_id, int(r.share), int(r.cost), r.status, r.country, r.region) for r in rows]


async def students_reached_by(session: AsyncSession, package_ids: list[str]) -> int:
    if not package_ids:
        return 0
    count = await session.scalar(
        text(
            """SELECT count(DISTINCT student_id) FROM allocations
               WHERE package_id = ANY(:ids) AND status IN ('delivered', 'accepted')"""
        ),
        {"ids": package_ids},
    )
    return int(count or 0)


async def merchant_pooled(
    session: AsyncSession, merchant_id: str, *, placed_from: datetime | None, placed_to: datetime | None
) -> int:
    """The merchant's money (orders placed in the period) that reached the pool, in the base currency."""
    total = await session.scalar(
        text(
            """SELECT coalesce(sum(s.amount), 0) FROM funding_sources s JOIN orders o ON o.id = s.order_id
               WHERE s.merchant_id = :merchant AND s.kind = 'collected'
                 AND (CAST(:placed_from AS timestamptz) IS NULL OR o.placed_at >= :placed_from)
                 AND (CAST(:placed_to AS timestamptz) IS NULL OR o.placed_at < :placed_to)"""
        ),
        {"merchant": merchant_id, "placed_from": placed_from, "placed_to": placed_to},
    )
    return int(total or 0)
