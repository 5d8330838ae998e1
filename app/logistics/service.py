"""Logistics partners and what they see of shipments. A partner sees its own shipments only — school, teacher
contact, boxes (kind, contents, grade), status and history — never a student or a roster code; the packing list
with roster codes is the programme's alone. Posting events is `tracking.py`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.core.csv_export import csv_text
from app.core.errors import NotFound
from app.core.ids import new_id
from app.core.secrets import decrypt
from app.logistics import machine, repository
from app.logistics.repository import ShipmentRow
from app.logistics.schemas import (
    ShipmentOut,
    ShipmentPackageOut,
    ShipmentSchoolOut,
    ShipmentSummaryOut,
)
from app.logistics.tracking import event_out, visible
from app.models import LogisticsPartner
from app.packages.schemas import ContentItem
from app.packages.service import school_out


async def create_partner(session: AsyncSession, *, name: str) -> LogisticsPartner:
    partner = LogisticsPartner(id=new_id("lgp"), name=name)
    session.add(partner)
    await session.flush()
    await session.refresh(partner)
    return partner


async def get_partner(session: AsyncSession, partner_id: str) -> LogisticsPartner:
    partner = await repository.get(session, partner_id)
    if partner is None:
        raise NotFound(f"No logistics partner {partner_id}.")
    return partner


# ---- shipments ----


def _summary(row: ShipmentRow, *, stale_before: datetime) -> dict[str, Any]:
    shipment, school = row.shipment, row.school
    return {
        "id": shipment.id,
        "run_id": shipment.run_id,
        "term": row.term,
        "status": shipment.status,
        "status_changed_at": shipment.status_changed_at,
        "last_event_at": shipment.last_event_at,
        "stale": shipment.status not in machine.FINAL and shipment.last_event_at < stale_before,
        "logistics_partner_id": shipment.logistics_partner_id,
        "school": ShipmentSchoolOut(
            id=school.id, name=school.name, country=school.country, region=school.region
        ),
        "package_count": row.package_count,
        "created_at": shipment.created_at,
    }


async def list_shipments(
    session: AsyncSession,
    principal: Principal,
    *,
    after: str | None,
    limit: int,
    status: str | None,
    school_id: str | None,
    country: str | None,
    stale: bool | None,
    logistics_partner_id: str | None,
    now: datetime,
    stale_days: int,
    finished: bool | None = None,
    newest_first: bool = False,
) -> tuple[list[ShipmentSummaryOut], list[str]]:
    """Shipments by id: every one for admin (or one partner's), a partner's own for a partner key. `stale`:
    not in a final state and no event for `stale_days` (or, false, the others); `finished`: in a final state
    (or, false, not)."""
    partner_id = logistics_partner_id if principal.is_admin else principal.logistics_partner_id
    if not principal.is_admin and logistics_partner_id not in (None, partner_id):
        return [], []
    stale_before = now - timedelta(days=stale_days)
    rows = await repository.shipments_page(
        session,
        after=after,
        limit=limit,
        partner_id=partner_id,
        status=status,
        school_id=school_id,
        country=country,
        stale_before=stale_before if stale else None,
        fresh_since=stale_before if stale is False else None,
        finished=finished,
        newest_first=newest_first,
    )
    return [ShipmentSummaryOut(**_summary(r, stale_before=stale_before)) for r in rows], [
        r.shipment.id for r in rows
    ]


async def _visible_shipment(session: AsyncSession, principal: Principal, shipment_id: str) -> ShipmentRow:
    row = await repository.shipment(session, shipment_id)
    if row is None or not visible(principal, row.shipment.logistics_partner_id):
        raise NotFound(f"No shipment {shipment_id}.")
    return row


async def get_shipment(
    session: AsyncSession,
    principal: Principal,
    shipment_id: str,
    *,
    cipher: MultiFernet,
    now: datetime,
    stale_days: int,
) -> ShipmentOut:
    """A shipment with its school and teacher contact, its boxes and its full history."""
    row = await _visible_shipment(session, principal, shipment_id)
    boxes = await repository.shipment_boxes(session, shipment_id)
    history = await repository.shipment_events(session, shipment_id)
    return ShipmentOut(
        **_summary(row, stale_before=now - timedelta(days=stale_days)),
        teacher_contact=school_out(row.school, cipher).teacher_contact,
        packages=[
            ShipmentPackageOut(
                id=box.allocation.package_id,
                kind_id=box.kind_id,
                kind_version_id=box.kind_version_id,
                name=box.name,
                contents=[ContentItem.model_validate(item) for item in box.contents],
                grade=box.allocation.grade,
                status=box.allocation.status,
                outcome_reason=box.outcome_reason,
            )
            for box in boxes
        ],
        events=[
            event_out(_columns(event), [_columns(o) for o in outcomes], cipher) for event, outcomes in history
        ],
        allowed_next=machine.allowed_next(row.shipment.status, programme=principal.is_admin),
    )


def _columns(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


async def packing_list(session: AsyncSession, shipment_id: str, *, cipher: MultiFernet) -> str:
    """CSV for the school's teacher: each box with the roster code of the student it is for (admin only; an
    erased student's code is gone, the line says so)."""
    if await repository.shipment(session, shipment_id) is None:
        raise NotFound(f"No shipment {shipment_id}.")
    rows = await repository.packing_list(session, shipment_id)
    return csv_text(
        [
            ["package_id", "package", "grade", "roster_code"],
            *(
                [package_id, name, grade, decrypt(cipher, code) if code is not None else "(erased)"]
                for package_id, name, grade, code in rows
            ),
        ]
    )
