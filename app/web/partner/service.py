"""What the field app's pages show: a partner's shipments, open ones first, and one shipment with what may follow.
Everything comes from the logistics service with the signed-in key, so the app sees exactly what the API would."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import MultiFernet
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.auth import Principal
from app.logistics import machine
from app.logistics import service as logistics
from app.logistics.schemas import ShipmentOut, ShipmentSummaryOut
from app.web.i18n import Formatter

# How many of its shipments a partner's list shows (open ones first).
LIST_LIMIT = 500


def status_names(fmt: Formatter) -> dict[str, str]:
    return {
        "planned": fmt.gettext("Planned"),
        "handed_over": fmt.gettext("Picked up"),
        "in_transit": fmt.gettext("In transit"),
        "customs_hold": fmt.gettext("Held at customs"),
        "out_for_delivery": fmt.gettext("Out for delivery"),
        "delivered": fmt.gettext("Delivered"),
        "receipt_confirmed": fmt.gettext("Receipt confirmed"),
        "delivery_failed": fmt.gettext("Delivery failed"),
        "returning": fmt.gettext("Returning"),
        "returned": fmt.gettext("Returned"),
        "cancelled": fmt.gettext("Cancelled"),
    }


def partner_machine() -> dict[str, list[str]]:
    """The state machine as a partner may use it (the page's script decides the buttons from it, offline too)."""
    return {status: machine.allowed_next(status, programme=False) for status in machine.TRANSITIONS}


@dataclass(frozen=True, slots=True)
class ShipmentList:
    open: list[ShipmentSummaryOut]
    done: list[ShipmentSummaryOut]


async def shipment_list(
    session: AsyncSession, principal: Principal, *, now: datetime, stale_days: int
) -> ShipmentList:
    """The partner's shipments: every open one first (stale ones at the top of them), then by school; then the
    latest `LIST_LIMIT` finished ones, newest first."""

    async def page(after: str | None, *, finished: bool) -> tuple[list[ShipmentSummaryOut], list[str]]:
        return await logistics.list_shipments(
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
            finished=finished,
            newest_first=finished,
        )

    # Every open shipment, however many finished ones came before them; the latest finished ones after.
    rows, ids = await page(None, finished=False)
    open_rows = list(rows)
    while len(ids) == LIST_LIMIT:
        rows, ids = await page(ids[-1], finished=False)
        open_rows += rows
    done_rows, _ = await page(None, finished=True)
    open_ = sorted(open_rows, key=lambda r: (not r.stale, r.school.name.casefold(), r.created_at))
    done = sorted(done_rows, key=lambda r: r.last_event_at, reverse=True)
    return ShipmentList(open_, done)


async def shipment_page(
    session: AsyncSession,
    principal: Principal,
    shipment_id: str,
    *,
    cipher: MultiFernet,
    now: datetime,
    stale_days: int,
) -> ShipmentOut:
    """One shipment as its partner sees it (another partner's is a 404)."""
    return await logistics.get_shipment(
        session, principal, shipment_id, cipher=cipher, now=now, stale_days=stale_days
    )


def packages_for_script(shipment: ShipmentOut) -> list[dict[str, Any]]:
    return [{"id": p.id, "name": p.name, "grade": p.grade} for p in shipment.packages]
