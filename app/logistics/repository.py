"""Every query of logistics: partners, shipments, their events and the boxes they move.

Reads go through the session; an event's effects are set-based statements on the raw asyncpg connection inside
the request's transaction, under the shipment's row lock (`lock_shipment`), so one shipment's events take turns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.logistics.machine import FINAL
from app.models import (
    Allocation,
    AllocationRun,
    LogisticsPartner,
    LovePackage,
    PackageKindVersion,
    School,
    Shipment,
    ShipmentEvent,
    ShipmentPackageOutcome,
    Student,
)

# ---- partners ----


async def get(session: AsyncSession, partner_id: str) -> LogisticsPartner | None:
    return await session.get(LogisticsPartner, partner_id)


async def list_after(session: AsyncSession, *, after: str | None, limit: int) -> list[LogisticsPartner]:
    query = select(LogisticsPartner).order_by(LogisticsPartner.id).limit(limit)
    if after is not None:
        query = query.where(LogisticsPartner.id > after)
    return list(await session.scalars(query))


# ---- shipments: reads ----


@dataclass(frozen=True, slots=True)
class ShipmentRow:
    shipment: Shipment
    school: School
    term: str
    package_count: int


def _shipment_rows() -> Any:
    packages = (
        select(func.count())
        .where(Allocation.shipment_id == Shipment.id)
        .correlate(Shipment)
        .scalar_subquery()
    )
    return (
        select(Shipment, School, AllocationRun.term, packages)
        .join(School, School.id == Shipment.school_id)
        .join(AllocationRun, AllocationRun.id == Shipment.run_id)
    )


async def shipments_page(
    session: AsyncSession,
    *,
    after: str | None,
    limit: int,
    partner_id: str | None,
    status: str | None,
    school_id: str | None,
    country: str | None,
    stale_before: datetime | None,
    fresh_since: datetime | None,
    finished: bool | None = None,
    newest_first: bool = False,
) -> list[ShipmentRow]:
    """Shipments by id (the newest first if asked), filtered. `stale_before`: not final and no event since then;
    `fresh_since`: the others; `finished`: in a final state (or, false, not)."""
    order = Shipment.id.desc() if newest_first else Shipment.id
    query = _shipment_rows().order_by(order).limit(limit)
    if after is not None:
        query = query.where(Shipment.id < after if newest_first else Shipment.id > after)
    if finished is not None:
        query = query.where(Shipment.status.in_(FINAL) if finished else Shipment.status.not_in(FINAL))
    if partner_id is not None:
        query = query.where(Shipment.logistics_partner_id == partner_id)
    if status is not None:
        query = query.where(Shipment.status == status)
    if school_id is not None:
        query = query.where(Shipment.school_id == school_id)
    if country is not None:
        query = query.where(School.country == country)
    if stale_before is not None:
        query = query.where(Shipment.status.not_in(FINAL), Shipment.last_event_at < stale_before)
    if fresh_since is not None:
        query = query.where((Shipment.status.in_(FINAL)) | (Shipment.last_event_at >= fresh_since))
    return [ShipmentRow(*row) for row in await session.execute(query)]


async def shipment(session: AsyncSession, shipment_id: str) -> ShipmentRow | None:
    row = (await session.execute(_shipment_rows().where(Shipment.id == shipment_id))).first()
    return ShipmentRow(*row) if row is not None else None


@dataclass(frozen=True, slots=True)
class BoxRow:
    allocation: Allocation
    kind_id: str
    kind_version_id: str
    name: str
    contents: list[dict[str, Any]]
    outcome_reason: str | None


async def shipment_boxes(session: AsyncSession, shipment_id: str) -> list[BoxRow]:
    """The shipment's packages in the run's order, each with its record on this shipment and, after receipt,
    the reason a damaged or missing one gave."""
    receipt = (
        select(ShipmentEvent.id)
        .where(
            ShipmentEvent.shipment_id == shipment_id,
            ShipmentEvent.status == "receipt_confirmed",
            ShipmentEvent.result == "applied",
        )
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            Allocation,
            LovePackage.kind_id,
            LovePackage.kind_version_id,
            PackageKindVersion.name,
            PackageKindVersion.contents,
            ShipmentPackageOutcome.reason,
        )
        .join(LovePackage, LovePackage.id == Allocation.package_id)
        .join(PackageKindVersion, PackageKindVersion.id == LovePackage.kind_version_id)
        .outerjoin(
            ShipmentPackageOutcome,
            and_(
                ShipmentPackageOutcome.package_id == Allocation.package_id,
                ShipmentPackageOutcome.shipment_event_id == receipt,
            ),
        )
        .where(Allocation.shipment_id == shipment_id)
        .order_by(Allocation.rank)
    )
    return [BoxRow(*row) for row in rows]


async def shipment_events(
    session: AsyncSession, shipment_id: str
) -> list[tuple[ShipmentEvent, list[ShipmentPackageOutcome]]]:
    """The history in the order it was recorded, each event with its package outcomes (receipts only)."""
    events = list(
        await session.scalars(
            select(ShipmentEvent)
            .where(ShipmentEvent.shipment_id == shipment_id)
            .order_by(ShipmentEvent.sequence)
        )
    )
    receipts = [e.id for e in events if e.status == "receipt_confirmed"]
    outcomes: dict[str, list[ShipmentPackageOutcome]] = {}
    if receipts:
        for outcome in await session.scalars(
            select(ShipmentPackageOutcome)
            .where(ShipmentPackageOutcome.shipment_event_id.in_(receipts))
            .order_by(ShipmentPackageOutcome.package_id)
        ):
            outcomes.setdefault(outcome.shipment_event_id, []).append(outcome)
    return [(e, outcomes.get(e.id, [])) for e in events]


async def packing_list(session: AsyncSession, shipment_id: str) -> list[tuple[str, str, str, str | None]]:
    """(package id, kind name, grade, encrypted roster code or None once erased), in the run's order."""
    rows = await session.execute(
        select(
            Allocation.package_id, PackageKindVersion.name, Allocation.grade, Student.roster_code_encrypted
        )
        .join(LovePackage, LovePackage.id == Allocation.package_id)
        .join(PackageKindVersion, PackageKindVersion.id == LovePackage.kind_version_id)
        .join(Student, Student.id == Allocation.student_id)
        .where(Allocation.shipment_id == shipment_id)
        .order_by(Allocation.rank)
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


# ---- shipments: an event and its effects ----


async def lock_shipment(db: asyncpg.Connection, shipment_id: str) -> asyncpg.Record | None:
    """The shipment, locked until the transaction ends: its events are decided one at a time."""
    return await db.fetchrow(
        """SELECT id, logistics_partner_id, school_id, status, status_changed_at, last_event_at
           FROM shipments WHERE id = $1 FOR UPDATE""",
        shipment_id,
    )


async def find_event(db: asyncpg.Connection, shipment_id: str, event_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT * FROM shipment_events WHERE shipment_id = $1 AND event_id = $2", shipment_id, event_id
    )


async def event_outcomes(db: asyncpg.Connection, shipment_event_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            """SELECT package_id, outcome, reason FROM shipment_package_outcomes
               WHERE shipment_event_id = $1 ORDER BY package_id""",
            shipment_event_id,
        )
    )


async def shipment_package_ids(db: asyncpg.Connection, shipment_id: str) -> list[str]:
    return [
        r["package_id"]
        for r in await db.fetch("SELECT package_id FROM allocations WHERE shipment_id = $1", shipment_id)
    ]


@dataclass(frozen=True, slots=True)
class NewEvent:
    id: str
    shipment_id: str
    event_id: str
    status: str
    occurred_at: datetime
    recorded_at: datetime
    location: str | None
    note: str | None
    proof_encrypted: str | None
    result: str
    reason: str | None
    status_before: str
    status_after: str
    posted_by: str
    api_key_id: str
    content_hash: bytes


async def insert_event(
    db: asyncpg.Connection, event: NewEvent, outcomes: Sequence[tuple[str, str, str | None]]
) -> asyncpg.Record:
    """The event into the history, with its package outcomes (package id, outcome, reason); returns its row."""
    row = await db.fetchrow(
        """
        INSERT INTO shipment_events (id, shipment_id, event_id, status, occurred_at, recorded_at, location, note,
                                     proof_encrypted, result, reason, status_before, status_after, posted_by,
                                     api_key_id, content_hash)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        RETURNING *
        """,
        event.id,
        event.shipment_id,
        event.event_id,
        event.status,
        event.occurred_at,
        event.recorded_at,
        event.location,
        event.note,
        event.proof_encrypted,
        event.result,
        event.reason,
        event.status_before,
        event.status_after,
        event.posted_by,
        event.api_key_id,
        event.content_hash,
    )
    assert row is not None
    if outcomes:
        await db.execute(
            """
            INSERT INTO shipment_package_outcomes (shipment_event_id, package_id, outcome, reason)
            SELECT $1, u.package_id, u.outcome, u.reason
            FROM unnest($2::text[], $3::text[], $4::text[]) AS u(package_id, outcome, reason)
            """,
            event.id,
            [o[0] for o in outcomes],
            [o[1] for o in outcomes],
            [o[2] for o in outcomes],
        )
    return row


async def record_activity(
    db: asyncpg.Connection, shipment_id: str, occurred_at: datetime, *, new_status: str | None
) -> None:
    """Any event counts as activity (the latest `occurred_at` wins); an applied one also sets the status."""
    await db.execute(
        """
        UPDATE shipments SET last_event_at = greatest(last_event_at, $2),
                             status = coalesce($3, status),
                             status_changed_at = CASE WHEN $3::text IS NULL THEN status_changed_at ELSE $2 END
        WHERE id = $1
        """,
        shipment_id,
        occurred_at,
        new_status,
    )


async def ship_boxes(db: asyncpg.Connection, shipment_id: str, *, at: datetime) -> None:
    """Handed over: every box of the shipment is on its way."""
    await db.execute(
        "UPDATE allocations SET status = 'shipped' WHERE shipment_id = $1 AND status = 'allocated'",
        shipment_id,
    )
    await db.execute(
        """UPDATE love_packages SET status = 'shipped', status_changed_at = $2
           WHERE shipment_id = $1 AND status = 'allocated'""",
        shipment_id,
        at,
    )


async def deliver_boxes(db: asyncpg.Connection, shipment_id: str, *, at: datetime) -> None:
    """Delivered to the school (receipt not yet confirmed): the delivery date on each box and record."""
    await db.execute(
        """UPDATE allocations SET status = 'delivered', delivered_at = $2
           WHERE shipment_id = $1 AND status = 'shipped'""",
        shipment_id,
        at,
    )
    await db.execute(
        """UPDATE love_packages SET status = 'delivered', delivered_at = $2, status_changed_at = $2
           WHERE shipment_id = $1 AND status = 'shipped'""",
        shipment_id,
        at,
    )


async def confirm_boxes(
    db: asyncpg.Connection, shipment_id: str, outcomes: Sequence[tuple[str, str]], *, at: datetime
) -> list[asyncpg.Record]:
    """Each box at its outcome (accepted, damaged, missing), with the receipt date. Returns (package_id, cost,
    currency, outcome) per box."""
    ids, results = [o[0] for o in outcomes], [o[1] for o in outcomes]
    await db.execute(
        """
        UPDATE allocations a SET status = u.outcome, receipt_confirmed_at = $4
        FROM unnest($2::text[], $3::text[]) AS u(package_id, outcome)
        WHERE a.shipment_id = $1 AND a.package_id = u.package_id AND a.status = 'delivered'
        """,
        shipment_id,
        ids,
        results,
        at,
    )
    return list(
        await db.fetch(
            """
            UPDATE love_packages k SET status = u.outcome, receipt_confirmed_at = $4, status_changed_at = $4
            FROM unnest($2::text[], $3::text[]) AS u(package_id, outcome)
            WHERE k.shipment_id = $1 AND k.id = u.package_id AND k.status = 'delivered'
            RETURNING k.id AS package_id, k.cost, k.currency, u.outcome
            """,
            shipment_id,
            ids,
            results,
            at,
        )
    )


async def return_boxes(db: asyncpg.Connection, shipment_id: str, *, at: datetime) -> list[asyncpg.Record]:
    """Returned: the records say so and the boxes go back to stock, bound for no school until a later run of their
    kind gives them to new students. Returns (package_id, cost, currency) per box."""
    await db.execute(
        "UPDATE allocations SET status = 'returned' WHERE shipment_id = $1 AND status = 'shipped'",
        shipment_id,
    )
    return await _restock(db, shipment_id, at=at, only=None)


async def _restock(
    db: asyncpg.Connection, shipment_id: str, *, at: datetime, only: Sequence[str] | None
) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            """
            UPDATE love_packages SET status = 'in_stock', school_id = NULL, grade = NULL, shipment_id = NULL,
                                     delivered_at = NULL, receipt_confirmed_at = NULL, status_changed_at = $2
            WHERE shipment_id = $1 AND ($3::text[] IS NULL OR id = ANY($3::text[]))
            RETURNING id AS package_id, cost, currency
            """,
            shipment_id,
            at,
            None if only is None else list(only),
        )
    )


async def cancel_boxes(
    db: asyncpg.Connection, shipment_id: str, *, at: datetime
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Cancelled before it left: the students' records are cancelled (they become eligible again); boxes that came
    out of stock go back to stock, new ones are cancelled (their money goes back to the pool). Returns (restocked,
    cancelled), each (package_id, cost, currency) per box."""
    records = await db.fetch(
        """UPDATE allocations SET status = 'cancelled' WHERE shipment_id = $1 AND status = 'allocated'
           RETURNING package_id, from_stock""",
        shipment_id,
    )
    stock = [r["package_id"] for r in records if r["from_stock"]]
    restocked = await _restock(db, shipment_id, at=at, only=stock) if stock else []
    cancelled = list(
        await db.fetch(
            """
            UPDATE love_packages SET status = 'cancelled', status_changed_at = $2
            WHERE shipment_id = $1 AND status = 'allocated'
            RETURNING id AS package_id, cost, currency
            """,
            shipment_id,
            at,
        )
    )
    return restocked, cancelled


async def funding_shares(db: asyncpg.Connection, package_ids: Sequence[str]) -> list[asyncpg.Record]:
    """Per package and merchant whose orders funded it: the merchant's share, the cost, where it went."""
    return list(
        await db.fetch(
            """
            SELECT f.package_id, f.merchant_id, sum(f.amount) AS share, k.cost, k.currency, sc.country,
                   sc.region, k.grade, k.delivered_at, k.receipt_confirmed_at
            FROM package_funding f JOIN love_packages k ON k.id = f.package_id
            JOIN schools sc ON sc.id = k.school_id
            WHERE f.package_id = ANY($1::text[])
            GROUP BY f.package_id, f.merchant_id, k.cost, k.currency, sc.country, sc.region, k.grade,
                     k.delivered_at, k.receipt_confirmed_at
            ORDER BY f.package_id, f.merchant_id
            """,
            list(package_ids),
        )
    )
