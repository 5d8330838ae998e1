"""What the console's pages show: each gathers what the API's own endpoints answer, from the same domain services
and repositories, with the signed-in admin key as the caller. No rule of the programme lives here."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.activity import service as activity_service
from app.api_keys import repository as api_key_repository
from app.core.auth import Principal
from app.core.errors import InvalidRequest
from app.core.jobs import QueueStatus, queue_status
from app.core.money import currency_exponent
from app.donations import repository as donations_repository
from app.donations import service as donations
from app.donations.schemas import AnomalyOut
from app.events import repository as events_repository
from app.events.endpoints import ATTEMPTS_SHOWN, delivery_out, endpoint_out
from app.events.schemas import DeliveryOut, EndpointOut
from app.logistics import machine
from app.logistics import service as logistics
from app.logistics.schemas import ShipmentOut, ShipmentSummaryOut
from app.models import (
    ActivityEntry,
    ApiKey,
    LogisticsPartner,
    Merchant,
    Platform,
    School,
    WebhookDelivery,
)
from app.packages import allocation
from app.packages import repository as packages_repository
from app.packages import service as packages
from app.packages.schemas import (
    AllocationRunIn,
    AllocationRunOut,
    PackageKindVersionOut,
    SchoolOut,
    StudentOut,
)
from app.settlement import repository as settlement_repository
from app.settlement.endpoints import statement_out
from app.settlement.funds import funds_view
from app.settlement.schemas import FundsOut, StatementOut

# How many rows a console list shows (the API pages further; the console shows the first so many).
LIST_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Overview:
    funds: FundsOut
    jobs: list[QueueStatus]
    statements: list[StatementOut]
    stale_shipments: list[ShipmentSummaryOut]
    parked: int
    failing_endpoints: list[EndpointOut]


async def statements_needing_attention(session: AsyncSession) -> list[StatementOut]:
    """`GET /v1/statements?status=needs_attention`, then those whose last charge failed, then those waiting for
    a bank transfer (`pending_payment` on a merchant that pays by transfer)."""
    found = []
    for status in ("needs_attention", "payment_failed", "pending_payment"):
        rows = await settlement_repository.statements(
            session, status=status, anomalous=False, after=None, limit=LIST_LIMIT
        )
        found += [
            statement_out(s)
            for s in rows
            if status != "pending_payment" or s.billing_method == "bank_transfer"
        ]
    return found


async def stale_shipments(
    session: AsyncSession, principal: Principal, *, now: datetime, stale_days: int
) -> list[ShipmentSummaryOut]:
    rows, _ = await logistics.list_shipments(
        session,
        principal,
        after=None,
        limit=LIST_LIMIT,
        status=None,
        school_id=None,
        country=None,
        stale=True,
        logistics_partner_id=None,
        now=now,
        stale_days=stale_days,
    )
    return sorted(rows, key=lambda r: r.last_event_at)


async def failing_endpoints(session: AsyncSession) -> list[EndpointOut]:
    return [endpoint_out(e) for e in await events_repository.failing_endpoints(session, limit=LIST_LIMIT)]


async def overview(
    session: AsyncSession,
    principal: Principal,
    *,
    now: datetime,
    window: timedelta,
    base_currency: str,
    stale_days: int,
) -> Overview:
    parked = await donations_repository.parked_deliveries(
        session, platform_id=None, after=None, limit=LIST_LIMIT
    )
    return Overview(
        funds=await funds_view(session, now=now, window=window, base_currency=base_currency),
        jobs=await queue_status(session, failed_since=now - timedelta(days=1)),
        statements=await statements_needing_attention(session),
        stale_shipments=await stale_shipments(session, principal, now=now, stale_days=stale_days),
        parked=len(parked),
        failing_endpoints=await failing_endpoints(session),
    )


# ---- schools and students ----


async def partners(session: AsyncSession) -> list[LogisticsPartner]:
    return list(await session.scalars(select(LogisticsPartner).order_by(LogisticsPartner.name).limit(1000)))


async def schools(session: AsyncSession, cipher: MultiFernet) -> list[SchoolOut]:
    rows = await packages_repository.list_schools(
        session, after=None, limit=LIST_LIMIT, country=None, logistics_partner_id=None
    )
    return [packages.school_out(s, cipher) for s in rows]


@dataclass(frozen=True, slots=True)
class SchoolPage:
    school: SchoolOut
    students: list[StudentOut]
    partner_name: str


async def school_page(session: AsyncSession, school_id: str, cipher: MultiFernet) -> SchoolPage:
    school = packages.school_out(await packages.get_school(session, school_id), cipher)
    rows = await packages_repository.list_students(
        session, school_id, after=None, limit=LIST_LIMIT, status=None, grade=None
    )
    partner = await session.get(LogisticsPartner, school.logistics_partner_id)
    return SchoolPage(
        school,
        [packages.student_out(s, cipher) for s in rows],
        partner.name if partner else school.logistics_partner_id,
    )


# ---- package kinds, FX ----


@dataclass(frozen=True, slots=True)
class KindRow:
    id: str
    name: str
    retired: bool
    versions: list[PackageKindVersionOut]


async def package_kinds(session: AsyncSession) -> list[KindRow]:
    kinds = await packages_repository.list_kinds(session, after=None, limit=LIST_LIMIT, retired=None)
    rows = []
    for kind in kinds:
        versions = await packages_repository.versions_newest_first(session, kind.id, before=None, limit=20)
        rows.append(
            KindRow(
                kind.id,
                versions[0].name if versions else kind.id,
                kind.retired_at is not None,
                [packages.version_out(v) for v in versions],
            )
        )
    return rows


def minor_units(amount: str, currency: str) -> int:
    """An amount typed by a person ("1,176.00", "11.76") in the currency's minor units, exactly."""
    try:
        value = Decimal(amount.replace(",", "").strip())
        exponent = currency_exponent(currency)
    except (InvalidOperation, ValueError):
        raise InvalidRequest("amount: not an amount") from None
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value() or minor < 0:
        raise InvalidRequest(f"amount: {currency} has {exponent} decimal places")
    return int(minor)


# ---- shipments ----


async def shipment_board(
    session: AsyncSession, principal: Principal, *, now: datetime, stale_days: int
) -> dict[str, list[ShipmentSummaryOut]]:
    """Shipments by status in the state machine's order, stale ones first in each, then the oldest event."""
    board: dict[str, list[ShipmentSummaryOut]] = {status: [] for status in machine.TRANSITIONS}
    after = None
    while True:
        rows, ids = await logistics.list_shipments(
            session,
            principal,
            after=after,
            limit=LIST_LIMIT,
            status=None,
            school_id=None,
            country=None,
            stale=None,
            logistics_partner_id=None,
            now=now,
            stale_days=stale_days,
        )
        for row in rows:
            board.setdefault(row.status, []).append(row)
        if len(ids) < LIST_LIMIT or sum(map(len, board.values())) >= 5 * LIST_LIMIT:
            break
        after = ids[-1]
    for rows in board.values():
        rows.sort(key=lambda r: (not r.stale, r.last_event_at))
    return {status: rows for status, rows in board.items() if rows}


async def shipment(
    session: AsyncSession,
    principal: Principal,
    shipment_id: str,
    *,
    cipher: MultiFernet,
    now: datetime,
    stale_days: int,
) -> ShipmentOut:
    return await logistics.get_shipment(
        session, principal, shipment_id, cipher=cipher, now=now, stale_days=stale_days
    )


# ---- webhooks and event endpoints ----


@dataclass
class PlatformWebhooks:
    platform: Platform
    parked: list[WebhookDelivery] = field(default_factory=list)
    anomalies: list[AnomalyOut] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EndpointDeliveries:
    endpoint: EndpointOut
    failing: list[DeliveryOut]


async def webhooks(session: AsyncSession) -> tuple[list[PlatformWebhooks], list[EndpointDeliveries]]:
    """Per platform, its parked order events and anomalies; and each failing event endpoint with the deliveries
    that didn't go through."""
    platforms = {
        p.id: PlatformWebhooks(p) for p in await session.scalars(select(Platform).order_by(Platform.name))
    }
    for parked in await donations_repository.parked_deliveries(
        session, platform_id=None, after=None, limit=LIST_LIMIT
    ):
        if parked.platform_id in platforms:
            platforms[parked.platform_id].parked.append(parked)
    for anomaly in await donations_repository.anomalies(
        session, platform_id=None, after=None, limit=LIST_LIMIT
    ):
        if anomaly.platform_id in platforms:
            platforms[anomaly.platform_id].anomalies.append(donations.anomaly_out(anomaly))
    endpoints = []
    for endpoint in await failing_endpoints(session):
        rows = await events_repository.list_deliveries(session, endpoint.id, before=None, limit=50)
        failing = [(d, t) for d, t in rows if d.status != "delivered"]
        attempts = await events_repository.attempts_of(
            session, [d.id for d, _ in failing], per_delivery=min(3, ATTEMPTS_SHOWN)
        )
        endpoints.append(
            EndpointDeliveries(endpoint, [delivery_out(d, t, attempts.get(d.id, [])) for d, t in failing])
        )
    return list(platforms.values()), endpoints


# ---- API keys ----


async def api_keys(session: AsyncSession) -> list[ApiKey]:
    return await api_key_repository.list_after(session, after=None, limit=LIST_LIMIT)


async def key_scopes(session: AsyncSession) -> dict[str, list[tuple[str, str]]]:
    """What a new key can be scoped to, by role: (id, name) of each platform, merchant and logistics partner."""
    scopes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    models: tuple[tuple[str, Any], ...] = (
        ("platform", Platform),
        ("merchant", Merchant),
        ("logistics", LogisticsPartner),
    )
    for role, model in models:
        for row in await session.execute(select(model.id, model.name).order_by(model.name).limit(1000)):
            scopes[role].append((row[0], row[1]))
    return dict(scopes)


def problem_lines(errors: list[dict[str, Any]]) -> list[str]:
    """A refused roster's problems, one line each, as `roster.py` wrote them (never a roster code)."""
    lines = []
    for error in errors:
        where = []
        if error.get("row"):
            where.append(f"row {error['row']}")
        if error.get("line"):
            where.append(f"line {error['line']}")
        loc = error.get("loc") or []
        if loc and isinstance(loc[-1], str) and loc[-1] not in ("body", "*"):
            where.append(str(loc[-1]))
        lines.append(f"{', '.join(where)}: {error['msg']}" if where else str(error["msg"]))
    return lines


# ---- allocation ----


@dataclass(frozen=True, slots=True)
class AllocationPage:
    kinds: list[KindRow]
    """Kinds that can be allocated (not retired)."""
    runs: list[AllocationRunOut]
    """The latest runs, newest first."""
    plan: AllocationRunOut | None
    """The dry run asked for, with its plan and fingerprint."""
    school_names: dict[str, str]


async def allocation_page(
    session: AsyncSession, dry_run: AllocationRunIn | None, *, base_currency: str, now: datetime
) -> AllocationPage:
    """`POST /v1/allocation-runs` with `dry_run` (the plan, admin-only, as the API answers it) when asked,
    beside the kinds to choose from and `GET /v1/allocation-runs`'s first page."""
    plan = None
    if dry_run is not None:
        plan = await allocation.run_allocation(
            session,
            dry_run.model_copy(update={"dry_run": True}),
            base_currency=base_currency,
            now=now,
            with_plan=True,
        )
    runs = await allocation.latest_runs(session, limit=20)
    planned = plan.plan or [] if plan is not None else []
    school_ids = {s.school_id for s in planned} | {s.school_id for run in runs for s in run.schools}
    names = await session.execute(select(School.id, School.name).where(School.id.in_(school_ids)))
    return AllocationPage(
        kinds=[k for k in await package_kinds(session) if not k.retired],
        runs=runs,
        plan=plan,
        school_names={row[0]: row[1] for row in names},
    )


# ---- the activity log ----

ACTIVITY_PAGE = 50


@dataclass(frozen=True, slots=True)
class ActivityPage:
    entries: list[ActivityEntry]
    next_after: str | None
    """The cursor of the next (older) page, if there is one."""


async def activity(
    session: AsyncSession,
    principal: Principal,
    *,
    key_id: str | None,
    action: str | None,
    resource_type: str | None,
    after: str | None,
) -> ActivityPage:
    """`GET /v1/activity` with its filters, a page at a time by its cursor."""
    rows = await activity_service.list_activity(
        session,
        principal,
        key_id=key_id,
        action=action,
        resource_type=resource_type,
        after=after,
        limit=ACTIVITY_PAGE + 1,
    )
    more = len(rows) > ACTIVITY_PAGE
    rows = rows[:ACTIVITY_PAGE]
    return ActivityPage(rows, rows[-1].id if more else None)


_KEY_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def activity_filter_problem(*, key_id: str, action: str, resource_type: str, after: str) -> str | None:
    """The first filter (as `GET /v1/activity` checks it) that is not of its shape, by name; None if all are
    (empty means no filter)."""
    checks = (
        ("key_id", key_id, _KEY_ID),
        ("action", action, activity_service.ACTION),
        ("resource_type", resource_type, activity_service.RESOURCE_TYPE),
        ("after", after, _KEY_ID),
    )
    for name, value, shape in checks:
        if value and not shape.match(value):
            return name
    return None
